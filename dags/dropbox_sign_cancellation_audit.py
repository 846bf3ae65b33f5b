"""
Keep an audit trail of Dropbox Sign cancellations, one run per batch of ``signature_request_canceled``
events.

The DAG is scheduled on the account's ``signature_request_canceled`` asset: the provider's callback
receiver (``POST <api-server>/dropbox-sign/callback``) records each verified event as an asset
event, and Airflow queues a run. An event says that *a* cancellation happened on the account at
that second; the request id in it is what the payload claims, not covered by the event's hash. So
each id is read once: only the API's 410 ``deleted`` makes it a confirmed cancellation in the trail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.sdk import DAG, get_current_context, task

from dropbox_sign_provider.events import signature_request_event_asset
from dropbox_sign_provider.exceptions import DropboxSignError
from dropbox_sign_provider.state import RequestState, request_state

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
that second on the account, so nothing is trusted without that read. Returns the trail (XCom).

To keep the trail elsewhere (a table, a file), replace the logging in **audit**; the rows are the
same.
"""


def audit_row(event: dict[str, Any], state: RequestState | None, detail: str) -> dict[str, Any]:
    """One line of the trail: the event as claimed, and what the read of the request said."""
    return {
        "signature_request_id": event.get("signature_request_id"),
        "title": event.get("title"),
        "event_time": event.get("event_time"),
        "confirmed": state is RequestState.CANCELED,
        "read": detail,
    }


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
        events = [e.extra for e in context["triggering_asset_events"][CANCELED]]
        hook = DropboxSignHook()
        trail = []
        for extra in events:
            sr_id = extra.get("signature_request_id")
            if not sr_id:
                trail.append(audit_row(extra, None, "the event names no signature request"))
                continue
            answer: Any
            try:
                answer = hook.get_signature_request(sr_id)
            except DropboxSignError as error:
                answer = error
            try:
                state: RequestState | None = request_state(answer)
                detail = state.value
            except DropboxSignError as error:
                state, detail = None, str(error)
            trail.append(audit_row(extra, state, detail))
        for row in trail:
            log.info(
                "Cancellation audit: %s %s %r: %s",
                row["signature_request_id"],
                "confirmed" if row["confirmed"] else "not confirmed",
                row["title"],
                row["read"],
            )
        log.info("Cancellation audit: %s", json.dumps(trail))
        return trail

    audit()
