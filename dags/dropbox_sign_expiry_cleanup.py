"""
Every day, cancel the Dropbox Sign signature requests that are still out for signature but stale
(older than ``max_age_days``) or past their ``expires_at``.

Everything that talks to Dropbox Sign happens inside tasks: parsing this file sends no request.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task

from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.outcomes import count_outcomes, outcome_table, summarize
from dropbox_sign_provider.state import RequestState, request_state

log = logging.getLogger(__name__)

#: Airflow pool that bounds how many tasks call the Dropbox Sign API at once, across all workers:
#: the rate limit is per account, not per worker.
POOL = "dropbox_sign_api"
#: Ids per cancel task: one mapped task instance per batch.
BATCH_SIZE = 50
#: The cancel operator is idempotent (it asks Dropbox Sign what state a refused id is in), so a
#: task that failed on a lasting API outage is safe to run again.
API_TASK_ARGS: dict[str, Any] = {"pool": POOL, "retries": 2, "retry_delay": timedelta(minutes=2)}

#: Seconds between two checks of the queued cancellations, one API call per id still pending: with
#: hundreds of ids, checking more often would spend the account's rate limit on polling. A test or
#: demo deployment whose API answers faster sets the environment variable (on every Airflow
#: component, as it is read when the file is parsed).
CONFIRM_POKE_INTERVAL = float(os.environ.get("DROPBOX_SIGN_CONFIRM_POKE_INTERVAL", "60"))

STALE = "stale"
EXPIRED = "expired"

DOC_MD = f"""
# Clean up stale Dropbox Sign signature requests

Every day, cancels the signature requests of the `dropbox_sign_default` connection's account that
are still out for signature and either

- **stale**: sent more than *max_age_days* ago, or
- **expired**: past their expiry date (`expires_at`), so nobody can sign them any more.

Requests that were signed by everyone or declined are never touched.
**Cancellation is irreversible**: try a new *query* with *dry_run* first.

## Tasks
1. **find**: lists the incomplete requests (`complete:false`, plus *query*) page by page and keeps
   the stale and expired ones.
2. **guard**: fails the run, before anything is cancelled, when there are more than
   *max_cancellations* of them (a mistyped query must not wipe out an account); otherwise splits
   them into batches of {BATCH_SIZE}.
3. **cancel**: one task per batch. It cancels each id of its batch, then waits on the triggerer,
   without holding a worker or pool slot, until Dropbox Sign confirms every cancellation it queued
   (re-cancelling after 60 minutes without confirmation, as Dropbox Sign recommends). Only then
   does it fail, naming each id that failed, when some did: a failure on one id never leaves the
   others' cancellations unconfirmed. In a dry run it only reports what it would cancel.
4. **report**: counts by outcome and a table of every id, why it was picked and what happened,
   in the task log and as XCom. It runs when every batch succeeded; a failed batch's log holds
   the table of its ids.

## Parameters
- **max_age_days** (default 30): requests created longer ago than this are stale.
- **query** (default empty): an extra Dropbox Sign search filter joined with ` AND `,
  e.g. `title:NDA` or `metadata:onboarding`.
- **dry_run** (default false): report what would be cancelled; cancel nothing.
- **max_cancellations** (default 200): the most requests one run may cancel.

## Setup
The API tasks run in the Airflow pool `{POOL}`, so that all workers together stay within the
account's rate limit. Create it once: `airflow pools set {POOL} 4 "Dropbox Sign API calls"`.
**cancel** checks its queued cancellations every {CONFIRM_POKE_INTERVAL:g} seconds (environment variable
`DROPBOX_SIGN_CONFIRM_POKE_INTERVAL`).
"""


def _day(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).date().isoformat() if epoch else "?"


def reason_to_cancel(request: dict[str, Any], cutoff: float, now: float) -> str | None:
    """
    Why a listed signature request should be cancelled: ``stale``, ``expired``, or ``None`` to
    leave it alone.

    :param request: a signature request as the list endpoint returns it.
    :param cutoff: Unix time; requests created before it are stale.
    :param now: the current Unix time, for ``expires_at``.
    """
    # The search already asked for incomplete requests; the index may lag, so ask again here. A
    # request that was never sent successfully (has_error) cannot be cancelled: leave it alone.
    if request_state(request) is not RequestState.PENDING or request.get("has_error"):
        return None
    created_at = request.get("created_at")
    if isinstance(created_at, int | float) and created_at < cutoff:
        return STALE
    expires_at = request.get("expires_at")
    if isinstance(expires_at, int | float) and expires_at <= now:
        return EXPIRED
    return None


with DAG(
    dag_id="dropbox_sign_expiry_cleanup",
    description="Cancel Dropbox Sign signature requests that are stale or past their expiry",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    # Two overlapping runs would race to cancel the same requests.
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["dropbox-sign"],
    params={
        "max_age_days": Param(
            30,
            type="integer",
            minimum=1,
            title="Maximum age (days)",
            description="Incomplete requests created more than this many days ago are cancelled.",
        ),
        "query": Param(
            "",
            type="string",
            title="Extra search filter",
            description="Dropbox Sign search syntax, joined to complete:false with AND, "
            "e.g. title:NDA. Empty: every incomplete request of the account.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Report what would be cancelled; cancel nothing.",
        ),
        "max_cancellations": Param(
            200,
            type="integer",
            minimum=1,
            title="Maximum cancellations",
            description="Fail the run before cancelling anything when more requests than this match.",
        ),
    },
) as dag:

    @task(**API_TASK_ARGS)
    def find() -> list[dict[str, Any]]:
        """
        List the incomplete signature requests and keep the stale and the expired ones, oldest
        first.
        """
        # Imported here, not at the top: parsing this file then needs no HTTP client.
        from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

        params = get_current_context()["params"]
        now = time.time()
        cutoff = now - params["max_age_days"] * 86400
        # One listing of every incomplete request, with no created:[...] narrowing: expired requests
        # can be recent, and the search has no field for the expiry date.
        query = " AND ".join(part for part in ("complete:false", params["query"].strip()) if part)
        log.info(
            "Looking for requests matching %r created before %s or past their expiry",
            query,
            datetime.fromtimestamp(cutoff, tz=timezone.utc).isoformat(timespec="seconds"),
        )
        candidates: dict[str, dict[str, Any]] = {}
        listed = 0
        for request in DropboxSignHook().list_signature_requests(query=query):
            listed += 1
            reason = reason_to_cancel(request, cutoff, now)
            if reason is not None:
                candidates[request["signature_request_id"]] = {
                    "signature_request_id": request["signature_request_id"],
                    "title": request.get("title"),
                    "created_at": request.get("created_at"),
                    "expires_at": request.get("expires_at"),
                    "reason": reason,
                }
        found = sorted(candidates.values(), key=lambda c: (c["created_at"] or 0, c["signature_request_id"]))
        log.info("%d incomplete requests listed, %d to cancel", listed, len(found))
        return found

    @task
    def guard(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """
        Refuse an implausibly large clean-up before anything is cancelled; otherwise split the ids
        into the keyword arguments of one **cancel** task per batch.

        :param candidates: what **find** returned.
        """
        params = get_current_context()["params"]
        cap = params["max_cancellations"]
        if len(candidates) > cap:
            raise AirflowFailException(
                f"Found {len(candidates)} signature requests to cancel, more than max_cancellations={cap}. "
                f"Nothing was cancelled. Check the query ({params['query']!r}) and max_age_days "
                f"({params['max_age_days']}) with dry_run, or raise max_cancellations for this run."
            )
        ids = [candidate["signature_request_id"] for candidate in candidates]
        return [
            {"signature_request_ids": ids[start : start + BATCH_SIZE], "dry_run": params["dry_run"]}
            for start in range(0, len(ids), BATCH_SIZE)
        ]

    found = find()
    # dry_run is not a template field: it reaches each batch through the mapped keyword arguments.
    cancel = CancelSignatureRequestOperator.partial(
        task_id="cancel",
        on_completed="ignore",
        max_cancellations=BATCH_SIZE,
        # Each batch confirms what it queued before it fails on other ids, so no failure leaves a
        # queued cancellation unconfirmed (a separate confirm task would be skipped by that failure).
        wait_for_confirmation=True,
        deferrable=True,
        poke_interval=CONFIRM_POKE_INTERVAL,
        **API_TASK_ARGS,
    ).expand_kwargs(guard(found))

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def report(candidates: list[dict[str, Any]], cancelled: list[dict[str, str]]) -> dict[str, Any]:
        """
        Log the counts by outcome and a table of every id, then return both.

        :param candidates: what **find** returned.
        :param cancelled: the confirmed outcomes of each **cancel** batch (in a dry run, what it
            would do).
        """
        outcomes: dict[str, str] = {}
        for batch in cancelled:
            outcomes.update(batch)
        dry_run = bool(get_current_context()["params"]["dry_run"])
        picked = {c["signature_request_id"]: c for c in candidates}
        table = outcome_table(
            {sr_id: outcomes.get(sr_id, "not handled") for sr_id in picked},
            {
                sr_id: [
                    ("reason", c["reason"]),
                    ("created", _day(c["created_at"])),
                ]
                for sr_id, c in picked.items()
            },
        )
        counted = summarize(outcomes, {}) if outcomes else "nothing to cancel"
        log.info("Dropbox Sign clean-up%s: %s\n%s", " (dry run)" if dry_run else "", counted, table)
        return {"dry_run": dry_run, "counts": count_outcomes(outcomes), "outcomes": outcomes}

    report(found, cancel.output)
