"""
The :class:`DropboxSignEmulator`: what a test constructs, starts and drives. It holds the settings,
checks them, and offers the methods a test calls; the state behind them is an
:class:`~dropbox_sign_provider.testing.emulator.state.EmulatorState`, served by a
:class:`~dropbox_sign_provider.testing.emulator.server.Server` in a thread of its own or in the
caller's loop.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dropbox_sign_provider.testing.emulator.access import check_bind, remote_credentials
from dropbox_sign_provider.testing.emulator.callbacks import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_DELAY,
    CallbackAttempt,
)
from dropbox_sign_provider.testing.emulator.faults import DeliveryFaults, Faults, OddAnswer
from dropbox_sign_provider.testing.emulator.oauth import DEFAULT_TOKEN_LIFETIME, OAuthApps, TokenRefresh
from dropbox_sign_provider.testing.emulator.server import Server, root_url
from dropbox_sign_provider.testing.emulator.state import EmulatorState, LoggedRequest

DEFAULT_ACCOUNT_ID = "5008b25c7f67153e57d5a357b1687968068fb465"


class DropboxSignEmulator:
    """
    A local Dropbox Sign API on loopback, with state you can seed and inspect.

    :param api_keys: API keys accepted as HTTP Basic user names; the first one signs callback events.
        ``None`` (the default) accepts ``test-key``; with ``allow_remote`` keys of your own are
        required.
    :param access_tokens: OAuth access tokens accepted as ``Authorization: Bearer``. ``None`` (the
        default) accepts ``test-token``, or none at all with ``allow_remote``.
    :param rate_limit: requests per window for the whole account (all keys and tokens share it).
    :param high_tier_rate_limit: ``POST /signature_request/send`` calls per window, counted apart
        from the others, as Dropbox Sign's "high tier" endpoints are (25 a minute).
    :param window_seconds: length of a rate-limit window; windows are aligned to multiples of it
        on the epoch clock.
    :param cancel_delay: seconds between an accepted cancel call and the cancellation really
        happening (after which the request answers 410).
    :param callback_url: where events are POSTed, or ``None``; also set by ``PUT /v3/account`` and
        by assigning :attr:`callback_url`. Its host must be ``localhost`` or a loopback address
        unless ``allow_remote_callbacks`` is set.
    :param host: interface to bind: a loopback address (or a name resolving only to such) unless
        ``allow_remote`` is set.
    :param port: port to bind, ``0`` for a free one.
    :param account_id: the account's id, as answered by ``GET /account``.
    :param email: the account's email address (also the requester of every signature request).
    :param allow_remote: allow a ``host`` that is not a loopback address. The admin API can seed
        and change every request, so it then requires a token: ``admin_token``, or one generated
        with :func:`secrets.token_urlsafe` (read it from :attr:`admin_token`); and the API requires
        ``api_keys`` of your own, the documented defaults being refused.
    :param allow_remote_callbacks: deliver events to any callback URL. Without it, whoever may call
        ``PUT /v3/account`` could make the emulator POST to any address it can reach, so a callback
        URL must name ``localhost`` or a loopback address, checked when set and at each delivery.
    :param admin_token: the token every admin call but ``/_emulator/health`` must carry in the
        ``X-Emulator-Token`` header; ``None`` (the default) leaves a loopback emulator's admin API
        open, as tests and scripts on the same machine expect.
    :param callback_retry_delay: seconds before an event's first retry, doubling after each failed
        attempt (capped at 30 s). Dropbox Sign retries for about three days; this is a test's scale.
    :param callback_max_attempts: attempts per event delivery, the first one included.
    :param oauth_apps: the registered OAuth API apps, ``client_id`` -> ``client_secret``; grant one
        a refresh token with :meth:`grant_refresh_token`. ``POST /oauth/token?refresh`` (on this same
        server: point a connection's ``oauth_refresh_url`` at :attr:`oauth_refresh_url`) refreshes it.
    :param token_lifetime: seconds an OAuth access token lives (its ``expires_in``); after that the
        API answers it 401 ``unauthorized``. Dropbox Sign's are "typically one hour".
    :param rotate_refresh_tokens: whether each refresh answers a new refresh token (rotation).
    :param superseded_refresh_tokens_work: with rotation, whether a replaced refresh token still
        refreshes; Dropbox Sign does not say, so a client must cope with both.
    :raises ValueError: for a ``host`` that is not a loopback address without ``allow_remote``,
        ``allow_remote`` without ``api_keys`` of your own, an empty ``admin_token``, a
        ``callback_url`` that is not an http(s) URL or not on loopback (without
        ``allow_remote_callbacks``) or an out-of-range setting.
    """

    def __init__(
        self,
        api_keys: Iterable[str] | None = None,
        access_tokens: Iterable[str] | None = None,
        rate_limit: int = 100,
        high_tier_rate_limit: int = 25,
        window_seconds: float = 60.0,
        cancel_delay: float = 2.0,
        callback_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        account_id: str = DEFAULT_ACCOUNT_ID,
        email: str = "me@example.com",
        allow_remote: bool = False,
        admin_token: str | None = None,
        callback_retry_delay: float = DEFAULT_RETRY_DELAY,
        callback_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        allow_remote_callbacks: bool = False,
        oauth_apps: Mapping[str, str] | None = None,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        rotate_refresh_tokens: bool = False,
        superseded_refresh_tokens_work: bool = True,
    ) -> None:
        if isinstance(api_keys, str) or isinstance(access_tokens, str):
            raise TypeError("api_keys and access_tokens are collections of strings, not a single string")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if rate_limit < 0 or high_tier_rate_limit < 0 or cancel_delay < 0:
            raise ValueError("rate_limit, high_tier_rate_limit and cancel_delay must not be negative")
        if admin_token is not None and not admin_token.strip():
            raise ValueError("admin_token must not be empty: pass None to generate one")
        check_bind(host, allow_remote)
        self.api_keys: tuple[str, ...]
        self.access_tokens: tuple[str, ...]
        self.api_keys, self.access_tokens = remote_credentials(bool(allow_remote), api_keys, access_tokens)
        self.rate_limit = int(rate_limit)
        self.high_tier_rate_limit = int(high_tier_rate_limit)
        self.window_seconds = float(window_seconds)
        self.cancel_delay = float(cancel_delay)
        self.host = host
        self.allow_remote = bool(allow_remote)
        self.account_id = account_id
        self.email = email
        self.locale = "en-US"
        """The account's locale, as ``GET /v3/account`` answers it and ``PUT /v3/account`` sets it."""
        self.requests_log: list[LoggedRequest] = []
        """Every ``/v3`` call, in arrival order, faulted and refused ones included."""

        self._state = EmulatorState(
            self,
            callback_retry_delay=callback_retry_delay,
            callback_max_attempts=callback_max_attempts,
            allow_remote_callbacks=allow_remote_callbacks,
            oauth=OAuthApps(
                oauth_apps, token_lifetime, rotate_refresh_tokens, superseded_refresh_tokens_work
            ),
        )
        self.callback_events: list[dict[str, Any]] = self._state.dispatcher.acknowledged
        """The callback events the receiver acknowledged (the ``json`` field, parsed), in that order."""
        self.callback_url = callback_url

        self._admin_token_generated = admin_token is None and self.allow_remote
        self._admin_token = secrets.token_urlsafe(32) if self._admin_token_generated else admin_token
        self._server = Server(self._state, int(port))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> DropboxSignEmulator:
        """
        Bind and serve in a background thread with its own event loop.

        :return: the emulator itself, once it accepts connections.
        :raises OSError: when the address cannot be bound.
        """
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; calling it again does nothing."""
        self._server.stop()

    def __enter__(self) -> DropboxSignEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def serve_forever(self, port_file: str | None = None) -> None:
        """
        Serve in the running event loop until SIGINT or SIGTERM (what the CLI does).

        :param port_file: a path to write the bound port to once serving, for scripts. When the
            admin API requires a token, it is written first to the same path plus ``.admin-token``
            (readable by the owner only), so that the token is there once the port is.
        """
        await self._server.serve_forever(port_file, token_generated=self._admin_token_generated)

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (only known once started)."""
        if self._server.port is None:
            raise RuntimeError("the emulator has not been started")
        return self._server.port

    @property
    def url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:8000``: what a connection's host should hold."""
        return root_url(self.host, self.port)

    @property
    def base_url(self) -> str:
        """The versioned API base, e.g. ``http://127.0.0.1:8000/v3``."""
        return f"{self.url}/v3"

    @property
    def admin_url(self) -> str:
        """The admin API base, e.g. ``http://127.0.0.1:8000/_emulator``."""
        return f"{self.url}/_emulator"

    @property
    def oauth_refresh_url(self) -> str:
        """Where OAuth tokens are refreshed, e.g. ``http://127.0.0.1:8000/oauth/token``."""
        return f"{self.url}/oauth/token"

    @property
    def allow_remote_callbacks(self) -> bool:
        """
        Whether events may go to any callback URL, not only to loopback; fixed at construction,
        as the operator's choice, which no API call can change.
        """
        return self._state.dispatcher.allow_remote

    @property
    def admin_token(self) -> str | None:
        """
        The token admin calls must send in the ``X-Emulator-Token`` header, or ``None`` when the
        admin API is open (a loopback emulator without ``admin_token``).
        """
        return self._admin_token

    # -- state seeding and inspection ------------------------------------------------------------

    def create_signature_request(self, **fields: Any) -> dict[str, Any]:
        """
        Store a signature request, as if it had been sent from this account; or, with a
        ``requester_email_address`` other than the account's :attr:`email`, as if someone else had
        sent it to this account: lists show it and ``GET`` answers it, as Dropbox Sign does for
        received requests, but cancel answers 400 ``signature_request_cancel_failed``.

        Accepted fields: ``signature_request_id`` (default: 40 random lowercase hex characters),
        ``title``, ``subject``, ``message``, ``metadata`` (dict), ``created_at`` (epoch seconds,
        default now), ``expires_at`` (epoch seconds or ``None``), ``is_complete``, ``is_declined``,
        ``signers`` (``(name, email)`` pairs or dicts, which may also set ``status_code``,
        ``signed_at``, ``order``...), ``forbidden`` (the account may not access the request at all:
        lists leave it out; GET, cancel and remove answer 403) and any other top-level field of the
        SignatureRequestResponse object (e.g. ``cc_email_addresses``, ``has_error``), verbatim.

        :param fields: the fields above.
        :return: the ``signature_request`` object exactly as ``GET /signature_request/{id}`` answers it.
        :raises TypeError: for an unknown field.
        :raises ValueError: for inconsistent or duplicate values.
        """
        return self._state.create(fields)

    def create_bulk_send_job(
        self, count: int, *, bulk_send_job_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """
        Store a bulk send job that sent ``count`` signature requests, as if this account had sent it.

        Each request is an ordinary one (``GET``, cancel, remove, lists and events treat it as any
        other) that carries the job's ``bulk_send_job_id``; ``GET /bulk_send_job/{bulk_send_job_id}``
        lists them in the order the job sent them.

        :param count: how many requests the job sent, 1 to 250 (Dropbox Sign's most).
        :param bulk_send_job_id: the job's id (default: 40 random lowercase hex characters).
        :param fields: fields of every request, as :meth:`create_signature_request` takes them
            (``created_at`` is the job's too), except ``signature_request_id``, ``forbidden`` and
            ``requester_email_address``: each request gets an id of its own, and a job's requests
            are this account's.
        :return: ``{"bulk_send_job": ..., "signature_requests": [...]}``: the job as
            ``GET /bulk_send_job/list`` answers it and its requests as ``GET`` answers them.
        :raises TypeError: for an unknown field, or one the job sets itself.
        :raises ValueError: for a ``count`` out of range, inconsistent values or a duplicate id.
        """
        return self._state.create_bulk_send_job(count, fields, bulk_send_job_id)

    def get_state(self, signature_request_id: str) -> str:
        """
        Tell where a stored request is in its life.

        :param signature_request_id: the request's id.
        :return: one of ``awaiting_signature``, ``cancel_requested``, ``canceled``, ``completed``,
            ``declined``. A removed (``/remove``) request keeps its state: removal only ends access.
        :raises KeyError: for an unknown id.
        """
        return self._state.state_of(signature_request_id)

    def cancel_calls(self, signature_request_id: str) -> int:
        """
        Count the cancel calls for an id that reached the API (any answer, unknown ids included).

        Calls rejected before reaching it (401, 429, injected faults) are not counted; see
        :attr:`requests_log` for every call.

        :param signature_request_id: the id in the cancel URL.
        :return: the number of ``POST /v3/signature_request/cancel/{id}`` calls answered by the API.
        """
        return self._state.cancel_calls(signature_request_id)

    def signature_requests(self) -> list[dict[str, Any]]:
        """
        Return every stored request (canceled, forbidden and removed ones included), for assertions.

        :return: the request objects, each with an extra ``state`` key (see :meth:`get_state`).
        """
        return self._state.snapshot()

    # -- OAuth ---------------------------------------------------------------------------------

    def grant_refresh_token(self, client_id: str) -> str:
        """
        Authorize a registered OAuth app (``oauth_apps``) for the account, as its user would on
        Dropbox Sign's consent page: the app's refresh token.

        :raises KeyError: for an app that is not registered.
        """
        with self._state.lock:
            return self._state.oauth.grant(client_id)

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        """
        Revoke the authorization a refresh token belongs to: its refresh tokens (current and
        replaced) are refused with ``invalid_grant`` and its access tokens with 401 from now on.

        :return: whether the token belonged to an authorization.
        """
        with self._state.lock:
            return self._state.oauth.revoke(refresh_token)

    @property
    def token_refreshes(self) -> list[TokenRefresh]:
        """Every ``POST /oauth/token?refresh``, in arrival order, refused ones included (a copy)."""
        with self._state.lock:
            return list(self._state.oauth.refreshes)

    @property
    def oauth(self) -> OAuthApps:
        """The OAuth settings a test may change while the emulator serves (lifetime, rotation...)."""
        return self._state.oauth

    # -- what signers do, and the events they cause ----------------------------------------------

    def sign(self, signature_request_id: str, signer: int | None = None) -> dict[str, Any]:
        """
        Have one signer sign, or every signer still to sign, with the events Dropbox Sign sends in its
        documented order: ``signature_request_signed`` per signature signed (its
        ``event_metadata.related_signature_id`` that signature's ``signature_id``); once every signer
        has signed, ``signature_request_all_signed`` then ``signature_request_downloadable``. A request
        some have signed stays awaiting signature (``is_complete`` false) and can still be cancelled.

        :param signature_request_id: a request awaiting signature, not expired.
        :param signer: the signer who signs, by index (from 0) in the request's ``signatures``;
            ``None`` (the default) for every signer still to sign, in that order.
        :return: the request as ``GET`` now answers it.
        :raises KeyError: for an unknown id.
        :raises ValueError: (``TransitionRefused``) naming the id and the state that forbids it, or a
            signer index that is out of range or of a signer who signed already.
        """
        return self._state.sign(signature_request_id, signer)

    def decline(self, signature_request_id: str, reason: str | None = None) -> dict[str, Any]:
        """
        Have the first signer still to sign decline: the request becomes declined and
        ``signature_request_declined`` is sent, with ``reason`` as its ``event_message``.

        :param signature_request_id: a request awaiting signature, not expired.
        :param reason: the signer's ``decline_reason``.
        :return: the request as ``GET`` now answers it.
        :raises KeyError: for an unknown id.
        :raises ValueError: (``TransitionRefused``) naming the id and the state that forbids it.
        """
        return self._state.decline(signature_request_id, reason)

    def expire(self, signature_request_id: str) -> dict[str, Any]:
        """
        Make the request expire now (``expires_at`` set to now) and send ``signature_request_expired``.

        :param signature_request_id: a request awaiting signature, not already expired.
        :return: the request as ``GET`` now answers it (unsigned signatures ``expired``).
        :raises KeyError: for an unknown id.
        :raises ValueError: (``TransitionRefused``) naming the id and the state that forbids it.
        """
        return self._state.expire(signature_request_id)

    def send_callback_test(self) -> dict[str, Any]:
        """
        Send a ``callback_test`` event, as Dropbox Sign does to check a callback URL.

        :return: the event as sent (the ``json`` field, parsed).
        :raises RuntimeError: when no callback URL is set.
        """
        return self._state.send_callback_test()

    @property
    def callback_url(self) -> str | None:
        """Where events are POSTed (``None``: nowhere); an event goes to the URL set when it happens."""
        return self._state.callback_url

    @callback_url.setter
    def callback_url(self, url: str | None) -> None:
        self._state.set_callback_url(url)

    @property
    def callback_attempts(self) -> list[CallbackAttempt]:
        """Every attempt to deliver an event, in the order made, acknowledged or not (a copy)."""
        return self._state.attempts()

    # -- faults ------------------------------------------------------------------------------------

    def set_fault(
        self,
        *,
        latency: float = 0.0,
        error_rate: float = 0.0,
        error_statuses: Sequence[int] = (500, 502, 503),
        drop_rate: float = 0.0,
        malformed_rate: float = 0.0,
        rate_limit_storm: float = 0.0,
        never_complete: bool | int = False,
        search_ignores: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        """
        Replace the injected faults (faults not named are switched off).

        Injected faults happen "in front of" the API: they neither consume the rate-limit budget
        nor change any state. In particular a malformed answer to a cancel call means the cancel
        did *not* happen. Gateway errors (502, 503, 504) answer an HTML page without rate-limit
        headers, like a load balancer; other statuses answer the JSON error envelope.

        :param latency: seconds added before answering every ``/v3`` call.
        :param error_rate: fraction of calls answered with a status drawn from ``error_statuses``.
        :param error_statuses: the statuses ``error_rate`` draws from.
        :param drop_rate: fraction of calls whose connection is closed without an answer.
        :param malformed_rate: fraction of calls answered 200 with a truncated, invalid JSON body.
        :param rate_limit_storm: fraction of calls answered 429 ``exceeded_rate`` whatever the budget.
        :param never_complete: ``True``: every cancellation accepted while set stays pending forever;
            an int ``n``: the first ``n`` accepted cancel calls of each request are lost, later ones
            complete normally.
        :param search_ignores: search fields the list call's index ignores (``"from"``, ...): every
            request matches them, as when a new or changed request is not indexed yet. A provider
            must check what a list answers, not only what it asked for.
        :param seed: seeds the fault random generator, for reproducible runs.
        :raises ValueError: for an out-of-range value.
        """
        faults = Faults(
            latency=latency,
            error_rate=error_rate,
            error_statuses=tuple(error_statuses),
            drop_rate=drop_rate,
            malformed_rate=malformed_rate,
            rate_limit_storm=rate_limit_storm,
            never_complete=never_complete,
            search_ignores=tuple(search_ignores),
            seed=seed,
        )
        self._state.set_faults(faults.checked())

    def set_delivery_fault(
        self, *, duplicate: bool = False, out_of_order: bool = False, late: float = 0.0, forged: bool = False
    ) -> None:
        """
        Replace the delivery faults (faults not named are switched off); see
        :mod:`~dropbox_sign_provider.testing.emulator.callbacks` for what each does.

        :param duplicate: deliver each event twice, as Dropbox Sign may after a lost acknowledgement.
        :param out_of_order: deliver events emitted close together (within 0.25 s) newest first.
        :param late: seconds to hold each event before its first attempt.
        :param forged: sign events with a key that is not the account's (``event_hash`` then fails).
        :raises ValueError: for an out-of-range value.
        """
        self._state.set_delivery_faults(
            DeliveryFaults.checked(duplicate=duplicate, out_of_order=out_of_order, late=late, forged=forged)
        )

    def clear_faults(self) -> None:
        """Switch every injected fault off, odd answers and delivery faults included."""
        self._state.clear_faults()

    def add_odd_answers(self, *answers: OddAnswer) -> None:
        """
        Serve odd answers to the next matching ``/v3`` calls, in the order given: a redirect, a
        ``304`` with no body, a rate-limit header in milliseconds or an hour ahead, a ``429``
        whose rate-limit headers a proxy stripped, an oversized body... Each is logged in
        :attr:`requests_log` like any other call; one with a ``status`` changes no state.

        :param answers: the answers; each is used ``times`` times, then dropped.
        :raises ValueError: for a ``times`` below 1 or a status outside 100 to 599.
        """
        self._state.add_odd_answers(answers)

    @property
    def faults(self) -> dict[str, Any]:
        """The faults in force, as keyword arguments of :meth:`set_fault`."""
        return self._state.fault_settings()

    @property
    def delivery_faults(self) -> dict[str, Any]:
        """The delivery faults in force, as keyword arguments of :meth:`set_delivery_fault`."""
        return self._state.delivery_fault_settings()

    def clear_log(self) -> None:
        """Forget every logged ``/v3`` call."""
        self._state.clear_log()
