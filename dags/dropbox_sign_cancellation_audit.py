"""
Keep an audit trail of Dropbox Sign cancellations, one run per batch of ``signature_request_canceled``
events.

The DAG is scheduled on the account's ``signature_request_canceled`` asset: the provider's callback
receiver (``POST <api-server>/dropbox-sign/callback``) records each verified event as an asset
event, and Airflow queues a run. An event says that *a* cancellation happened on the account at
that second; the request id, title and metadata in it are what the payload claims, not covered by
the event's hash. So each id is read once, and the trail takes what it states from that read: only
the API's 410 ``deleted`` makes a confirmed cancellation, and the payload's title is kept apart,
marked unverified.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, get_current_context, task

from dropbox_sign_provider.cancellation.ids import shown, validate_signature_request_id
from dropbox_sign_provider.cancellation.state import RequestState, request_state
from dropbox_sign_provider.events.assets import signature_request_event_asset
from dropbox_sign_provider.events.callback import MAX_TITLE_CHARS
from dropbox_sign_provider.exceptions import DropboxSignError

if TYPE_CHECKING:
    from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

log = logging.getLogger(__name__)

CANCELED = signature_request_event_asset("signature_request_canceled")

DOC_MD = """
# Audit trail of Dropbox Sign cancellations

Runs whenever Dropbox Sign tells the account that signature requests were cancelled, whoever
cancelled them (this Airflow, a person in Dropbox Sign's web app, another integration).

**Set-up** (see the provider's *Events and callbacks* page): set the account's callback URL to
`https://<your Airflow API server>/dropbox-sign/callback`, and keep the `dropbox_sign_default`
connection's API key current: it is how each event is verified.

## What a run does
**audit** reads each request named by the run's events, once, and logs one line per request:
`confirmed` when Dropbox Sign answers 410 `deleted` (the cancellation happened), `not confirmed`
otherwise, with what the API said. The event alone proves only that *a* cancellation happened at
that second on the account, so nothing is trusted without that read: the row's `title` and
`created_at` come from the read (a cancelled request answers 410 with no fields, so they are empty
then), `read_at` is when it was read, and what the event claimed (its title, time and id) is kept
under `unverified`. An id that is not a Dropbox Sign id, or whose read failed, is one row saying so;
the other rows are unaffected. Returns the trail (XCom).

To keep the trail elsewhere (a table, a file), replace the logging in **audit**; the rows are the
same.
"""


def _claimed(event: Mapping[str, Any]) -> dict[str, Any]:
    # What the payload said: kept for the reader, never as a fact of the trail.
    title = event.get("title")
    return {
        "signature_request_id": shown(event.get("signature_request_id")),
        "title": title[:MAX_TITLE_CHARS] if isinstance(title, str) else None,
        "event_time": event.get("event_time"),
    }


def audit_row(
    sr_id: str | None, answer: Any, state: RequestState | None, detail: str, read_at: str | None
) -> dict[str, Any]:
    """
    One line of the trail: what the read of the request said.

    :param sr_id: the request's id (``None`` when the event named no valid id).
    :param answer: the request as ``GET`` returned it, or ``None`` (410, an error, not read).
    :param state: the state the read told, or ``None`` when it told none.
    :param detail: the state in words, or why there is none.
    :param read_at: when it was read (ISO 8601, UTC), or ``None`` when it was not.
    """
    fields = answer if isinstance(answer, Mapping) else {}
    return {
        "signature_request_id": sr_id,
        "confirmed": state is RequestState.CANCELED,
        "read": detail,
        "read_at": read_at,
        "title": fields.get("title"),
        "created_at": fields.get("created_at"),
    }


def audit_events(hook: DropboxSignHook, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """
    Read each request the events name, once, and return one trail row per event.

    A malformed id or a failed read is that event's row; it never stops the others.

    :param hook: the account's hook.
    :param events: the ``extra`` of each triggering asset event.
    """
    reads: dict[str, dict[str, Any]] = {}
    trail = []
    for event in events:
        raw = event.get("signature_request_id")
        if not raw:
            row = audit_row(None, None, None, "the event names no signature request", None)
        else:
            try:
                sr_id = validate_signature_request_id(raw)
            except ValueError as error:
                row = audit_row(None, None, None, f"not read: {error}", None)
            else:
                if sr_id not in reads:
                    reads[sr_id] = _read(hook, sr_id)
                row = dict(reads[sr_id])
        trail.append({**row, "unverified": _claimed(event)})
    return trail


def _read(hook: DropboxSignHook, sr_id: str) -> dict[str, Any]:
    answer: Any
    read_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        answer = hook.get_signature_request(sr_id)
    except DropboxSignError as error:
        answer = error
    try:
        state = request_state(answer)
    except DropboxSignError as error:
        return audit_row(sr_id, None, None, str(error), read_at)
    return audit_row(sr_id, answer, state, state.value, read_at)


with DAG(
    dag_id="dropbox_sign_cancellation_audit",
    schedule=[CANCELED],
    catchup=False,
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["dropbox-sign", "audit"],
):

    @task(retries=2)
    def audit() -> list[dict[str, Any]]:
        """Read each request the run's events name; log and return one line each."""
        from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

        context = get_current_context()
        trail = audit_events(
            DropboxSignHook(), [e.extra for e in context["triggering_asset_events"][CANCELED]]
        )
        for row in trail:
            log.info(
                "Cancellation audit: %s %s (title %r): %s",
                row["signature_request_id"] or row["unverified"]["signature_request_id"],
                "confirmed" if row["confirmed"] else "not confirmed",
                row["title"],
                row["read"],
            )
        log.info("Cancellation audit: %s", json.dumps(trail))
        return trail

    audit()
