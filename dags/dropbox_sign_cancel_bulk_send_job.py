"""
Cancel every incomplete signature request of a Dropbox Sign bulk send job, after a person approves:
the answer to a bulk send of the wrong document. Parsing this file sends no request.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task

from dropbox_sign_provider.cancellation.report import report_cancellations
from dropbox_sign_provider.operators.approval import CancellationApprovalOperator
from dropbox_sign_provider.operators.signature_request import (
    CancelSignatureRequestOperator,
    ListSignatureRequestsOperator,
)

DOC_MD = """
# Cancel a bulk send job

Dropbox Sign has no bulk cancel. This DAG lists the requests of the bulk send job you name (page by
page), leaves alone those signed, declined or expired, and asks a person to approve cancelling the
rest (the form shows them). Approved, it cancels them in batches of 50 and confirms each; **report**
logs a table of every request. **Reject**, or no answer in time, cancels nothing.

The job id is in Dropbox Sign's answer to the bulk send, and in `GET /bulk_send_job/list`.
"""

with DAG(
    dag_id="dropbox_sign_cancel_bulk_send_job",
    description="Cancel every incomplete request of a Dropbox Sign bulk send job, after approval",
    schedule=None,
    catchup=False,
    doc_md=DOC_MD,
    tags=["dropbox-sign"],
    params={
        "bulk_send_job_id": Param(
            type="string",
            pattern="^[0-9a-f]{16,64}$",
            title="Bulk send job id",
            description="40 lowercase hex characters, e.g. 6e683bc0369ba3d5b6f43c2c22a8031dbf6bd174.",
        ),
    },
) as dag:
    find = ListSignatureRequestsOperator(
        task_id="find",
        bulk_send_job_id="{{ params.bulk_send_job_id }}",
        # A bulk send job holds at most 250 requests; a person approves them all.
        require_approval=True,
        max_cancellations=250,
        batch_size=50,
        retries=2,
        retry_delay=timedelta(minutes=1),
    )
    approve = CancellationApprovalOperator(
        task_id="approve",
        selection=find.output,
        subject="Cancel these requests of a Dropbox Sign bulk send job? This cannot be undone.",
    )
    cancel = CancelSignatureRequestOperator.partial(
        task_id="cancel",
        approval_grant=approve.output,
        require_selection=True,
        on_completed="ignore",
        wait_for_confirmation=True,
        deferrable=True,
        max_cancellations=None,
        max_active_tis_per_dagrun=4,
    ).expand(signature_request_ids=find.output)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def report(selection: list[dict[str, Any]], outcomes: list[dict[str, str]] | None) -> dict[str, Any]:
        """Log and return who approved and what became of each request."""
        return report_cancellations(
            selection, outcomes, list_task_id="find", approval_task_id="approve", cancel_task_id="cancel"
        )

    report(find.output, cancel.output)  # type: ignore[arg-type]
