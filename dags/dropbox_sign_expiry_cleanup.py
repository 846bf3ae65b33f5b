"""
Every day, cancel the Dropbox Sign signature requests that have been out for signature longer than
``max_age_days``: list, approve when over the cap, cancel and confirm, report.

Nothing is cancelled until the deployment arms cancelling by rule (``[dropbox_sign] armed``); until
then every run is a dry run that says so. Parsing this file sends no request.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import DAG, Param, TriggerRule, task

from dropbox_sign_provider.cancellation.report import report_cancellations
from dropbox_sign_provider.operators.approval import CancellationApprovalOperator
from dropbox_sign_provider.operators.signature_request import (
    CancelSignatureRequestOperator,
    ListSignatureRequestsOperator,
)

#: The API tasks' pool ([dropbox_sign] pool, read when this file is parsed); retries are safe, as
#: every step is idempotent.
API_TASK_ARGS = {
    "pool": conf.get("dropbox_sign", "pool", fallback="default_pool"),
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
}

DOC_MD = """
# Clean up stale Dropbox Sign signature requests

Cancels the requests of the `dropbox_sign_default` account that are still out for signature and were
sent more than *max_age_days* ago. Received, signed, declined, expired and never-sent requests are
left alone.
**Cancellation is irreversible**: try a new *query* with *dry_run* first.

**Arming.** Until the deployment sets `[dropbox_sign] armed = True`, every run is a dry run: its
**report** lists what it would cancel and says `NOT ARMED`. The Variable `dropbox_sign_cleanup_armed`
set to `false` disarms at once; no Variable can arm.

1. **find** lists the incomplete requests the account sent (`from:me AND complete:false`, a
   `created:` range and *query*; only the list pages, 100 requests each) and signs the selection
   in batches of 50 when the run may cancel.
   More than *max_cancellations* (the deployment's `[dropbox_sign] max_cancellations` at most) fails
   the run before anything is cancelled, or, with *over_cap* `ask`, needs a person's Approve.
2. **approve** asks a person in the Airflow UI (*Required Actions*) only when the selection needs it,
   showing the search and the oldest requests. **Reject** cancels nothing; no answer within
   `[dropbox_sign] approval_timeout` cancels nothing and fails the run.
3. **cancel**, one task per batch (4 at a time), cancels only ids **find** signed, then waits on the
   triggerer until Dropbox Sign confirms each (re-cancelling after 60 minutes); a failed id fails its
   batch only after every other was confirmed. A dry run only reports what it would cancel.
4. **report** logs who decided, the counts and a table of every id; XCom holds the same.

Confirmation polls every `[dropbox_sign] poke_interval` seconds, or on Dropbox Sign's events with
`[dropbox_sign] event_first`. See the provider's *Expiry clean-up* page.
"""

with DAG(
    dag_id="dropbox_sign_expiry_cleanup",
    description="Cancel Dropbox Sign signature requests older than max_age_days "
    "(a dry run until [dropbox_sign] armed is True)",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    # Two overlapping runs would race to cancel the same requests.
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["dropbox-sign"],
    params={
        "max_age_days": Param(30, type="integer", minimum=1, title="Maximum age (days)"),
        "query": Param(
            "",
            type="string",
            title="Extra search filter",
            description="Dropbox Sign search syntax, e.g. title:NDA. Empty: every incomplete request.",
        ),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Cancel nothing."),
        "max_cancellations": Param(
            200,
            type="integer",
            minimum=1,
            title="Maximum cancellations",
            description="The most one run cancels without approval ([dropbox_sign] max_cancellations "
            "at most).",
        ),
        "over_cap": Param(
            "fail",
            type="string",
            enum=["fail", "ask"],
            title="When more than the maximum are found",
            description="fail: cancel nothing and fail. ask: a person approves or rejects first.",
        ),
    },
) as dag:
    find = ListSignatureRequestsOperator(
        task_id="find",
        query="{{ params.query }}",
        max_age="{{ params.max_age_days }}",
        dry_run="{{ params.dry_run }}",
        max_cancellations="{{ params.max_cancellations }}",
        over_cap="{{ params.over_cap }}",
        batch_size=50,
        **API_TASK_ARGS,
    )
    approve = CancellationApprovalOperator(
        task_id="approve",
        selection=find.output,
        subject="Cancel more stale Dropbox Sign signature requests than max_cancellations allows?",
    )
    cancel = CancelSignatureRequestOperator.partial(
        task_id="cancel",
        approval_grant=approve.output,
        # Only what find selected and signed: ids written into an XCom are refused.
        require_selection=True,
        on_completed="ignore",
        wait_for_confirmation=True,
        deferrable=True,
        max_cancellations=None,
        max_active_tis_per_dagrun=4,
        **API_TASK_ARGS,
    ).expand(signature_request_ids=find.output)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def report(selection: list[dict[str, Any]], outcomes: list[dict[str, str]] | None) -> dict[str, Any]:
        """Log and return who decided and what became of each request."""
        return report_cancellations(
            selection, outcomes, list_task_id="find", approval_task_id="approve", cancel_task_id="cancel"
        )

    report(find.output, cancel.output)  # type: ignore[arg-type]
