"""Apache Airflow provider for Dropbox Sign."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

DEFAULT_HOST = "https://api.hellosign.com"
#: Dropbox Sign's token endpoint (``oauthTokenRefresh``'s server, not the API's), unless a connection
#: names another.
DEFAULT_OAUTH_TOKEN_URL = "https://app.hellosign.com/oauth/token"  # noqa: S105 - an address
DEFAULT_CONN_NAME = "dropbox_sign_default"
#: The connection type of a Dropbox Sign account, and the provider's section of Airflow's configuration.
CONN_TYPE = CONFIG_SECTION = "dropbox_sign"
#: Dropbox Sign's limit for standard endpoints, per account: the connection's default share.
DEFAULT_MAX_REQUESTS_PER_MINUTE = 100
# A whole number: the connection form shows the default as written (30, not 30.0).
DEFAULT_TIMEOUT_SECONDS = 30


def configured_conn_ids(option: str) -> list[str]:
    """The comma-separated connection ids of ``[dropbox_sign] <option>``, in order, each once."""
    from airflow.configuration import conf

    raw = conf.get(CONFIG_SECTION, option, fallback=DEFAULT_CONN_NAME) or ""
    return list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def get_provider_info() -> dict[str, Any]:
    """
    Describe this provider to Airflow's providers manager (the ``apache_airflow_provider`` entry point).

    The connection form is declared here rather than in hook methods, so the UI can render it
    without importing the hook.
    """
    return {
        "package-name": "airflow-provider-dropbox-sign",
        "name": "Dropbox Sign",
        "description": "`Dropbox Sign <https://developers.hellosign.com/>`__: confirmed, idempotent, "
        "rate-limited cancellation of signature requests.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Dropbox Sign",
                "external-doc-url": "https://developers.hellosign.com/api/reference/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Dropbox Sign",
                "python-modules": ["dropbox_sign_provider.hooks.dropbox_sign"],
            }
        ],
        "operators": [
            {
                "integration-name": "Dropbox Sign",
                "python-modules": ["dropbox_sign_provider.operators.signature_request"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Dropbox Sign",
                "python-modules": ["dropbox_sign_provider.sensors.signature_request"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Dropbox Sign",
                "python-modules": ["dropbox_sign_provider.triggers.signature_request"],
            }
        ],
        "extra-links": ["dropbox_sign_provider.links.DropboxSignRequestLink"],
        # Checks each dropbox-sign:// asset URI as a DAG declares it (the plugin's events go there).
        "asset-uris": [
            {"schemes": ["dropbox-sign"], "handler": "dropbox_sign_provider.events.assets.sanitize_uri"}
        ],
        "config": {
            "dropbox_sign": {
                "description": "The deployment's policy for cancelling Dropbox Sign signature requests "
                "(who must approve, how many a run may cancel without approval), and the "
                "callbacks received by the Airflow API server at ``POST /dropbox-sign/callback`` (the "
                "provider's plugin). Airflow reads this section once per process: a change takes effect "
                "when each component (workers, triggerers, API server) restarts.",
                "options": {
                    "require_approval": {
                        "description": "Whether a cancellation of ids named at run time (a trigger "
                        "form's param, an XCom, a template) waits for a person's Approve in the Airflow "
                        "UI. A DAG or a run may ask for approval where this is False, never skip it "
                        "where this is True. Ids that the provider's own list step selected by rule (the "
                        "clean-up) need approval only over max_cancellations.",
                        "version_added": __version__,
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "approvers": {
                        "description": "Comma-separated Airflow user ids who may answer a cancellation's "
                        "approval (its assigned users). Empty: any user allowed to answer the DAG's "
                        "required actions.",
                        "version_added": __version__,
                        "type": "string",
                        "example": "alice,bob",
                        "default": "",
                    },
                    "four_eyes": {
                        "description": "Refuse an Approve given by the user who triggered the run: "
                        "another person must approve. Needs real users (with the simple auth manager's "
                        "all-admins mode every user is the same admin).",
                        "version_added": __version__,
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                    "max_cancellations": {
                        "description": "The most signature requests one run cancels on a rule's "
                        "selection (the clean-up) without a person's approval. A run's param may lower "
                        "it, never raise it: a run that selects more asks for approval (when it may) or "
                        "cancels nothing.",
                        "version_added": __version__,
                        "type": "integer",
                        "example": "500",
                        "default": "200",
                    },
                    "approval_timeout": {
                        "description": "Seconds an approval waits for a person before it counts as "
                        "Reject (nothing is cancelled, and the run fails so that somebody notices).",
                        "version_added": __version__,
                        "type": "integer",
                        "example": "3600",
                        "default": "86400",
                    },
                    "armed": {
                        "description": "Whether what a list step selected by rule (the expiry clean-up, "
                        "a bulk send job, any DAG built on ListSignatureRequestsOperator) may be "
                        "cancelled without a person approving the whole selection. False: every such run "
                        "is a dry run that reports what it would cancel and signs nothing, so no cancel "
                        "step accepts its selection; a list step with require_approval still asks. Only the "
                        "deployment arms; the Airflow Variable dropbox_sign_cleanup_armed set to false "
                        "disarms at once (a Variable can never arm).",
                        "version_added": __version__,
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                    "poke_interval": {
                        "description": "Seconds between two reads of the cancellations a task waits for, "
                        "one API call per id still pending, when the task does not set its own "
                        "poke_interval. With event_first, the fallback poll.",
                        "version_added": __version__,
                        "type": "float",
                        "example": "15",
                        "default": "60",
                    },
                    "event_first": {
                        "description": "Confirm cancellations on Dropbox Sign's signature_request_canceled "
                        "events first, polling every poke_interval only as the fallback, when a task does "
                        "not set its own event_first. Needs the callback receiver set up (the provider's "
                        "Events and callbacks page).",
                        "version_added": __version__,
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                    "pool": {
                        "description": "The Airflow pool of the example DAGs' API tasks. A task naming a "
                        "pool that does not exist is never scheduled: create the pool first. Read when "
                        "a DAG file is parsed (a task's pool is part of the DAG).",
                        "version_added": __version__,
                        "type": "string",
                        "example": "dropbox_sign_api",
                        "default": "default_pool",
                    },
                    "callback_conn_ids": {
                        "description": "Comma-separated ids of the ``dropbox_sign`` connections whose "
                        "accounts may post callback events. An event is accepted when its event_hash "
                        "verifies with one of these connections' API keys (the password), and recorded "
                        "for that connection's account. A connection with only an OAuth access_token "
                        "cannot verify events and is skipped.",
                        "version_added": __version__,
                        "type": "string",
                        "example": "dropbox_sign_default,dropbox_sign_sales",
                        "default": DEFAULT_CONN_NAME,
                    },
                    "ui_conn_ids": {
                        "description": "Comma-separated ids of the ``dropbox_sign`` connections the "
                        "Dropbox Sign page of the Airflow UI offers (the provider's plugin): it lists the "
                        "incomplete requests each account sent, to users who may trigger the manual "
                        "cancel DAG, and triggers that DAG with the ids they select. No other connection "
                        "can be listed from the page.",
                        "version_added": __version__,
                        "type": "string",
                        "example": "dropbox_sign_default,dropbox_sign_sales",
                        "default": DEFAULT_CONN_NAME,
                    },
                },
            },
        },
        "connection-types": [
            {
                "hook-class-name": "dropbox_sign_provider.hooks.dropbox_sign.DropboxSignHook",
                "hook-name": "Dropbox Sign",
                "connection-type": "dropbox_sign",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"password": "API key"},
                    "placeholders": {
                        "host": DEFAULT_HOST,
                        "password": "Your Dropbox Sign API key (or leave empty: access token, or API app)",
                    },
                },
                "conn-fields": {
                    "access_token": {
                        "label": "Access token",
                        "description": "OAuth access token, used instead of an API key (sent as Bearer).",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "client_id": {
                        "label": "API app client ID",
                        "description": "An API app's client_id: with its client secret and a refresh "
                        "token, access tokens are refreshed as they expire (instead of an API key or a "
                        "fixed access token).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_secret": {
                        "label": "API app client secret",
                        "description": "The API app's client_secret (keep the connection in a secrets "
                        "backend).",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "refresh_token": {
                        "label": "Refresh token",
                        "description": "The refresh token the app got when the account authorized it. "
                        "When Dropbox Sign rotates it, the newest is kept in the Variable "
                        "dropbox_sign_refresh_token__<conn_id>, which is read first.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "oauth_refresh_url": {
                        "label": "Token endpoint",
                        "description": f"Where access tokens are refreshed (default "
                        f"{DEFAULT_OAUTH_TOKEN_URL}).",
                        "schema": {"type": ["string", "null"], "default": DEFAULT_OAUTH_TOKEN_URL},
                    },
                    "max_requests_per_minute": {
                        "label": "Requests per minute",
                        "description": "Client-side budget shared by every task and trigger in a process "
                        "that uses these credentials. Dropbox Sign allows 100 per account.",
                        "schema": {
                            "type": ["integer", "null"],
                            "default": DEFAULT_MAX_REQUESTS_PER_MINUTE,
                            "minimum": 1,
                        },
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Timeout of every HTTP call.",
                        "schema": {
                            "type": ["number", "null"],
                            "default": DEFAULT_TIMEOUT_SECONDS,
                            "exclusiveMinimum": 0,
                        },
                    },
                },
            }
        ],
    }
