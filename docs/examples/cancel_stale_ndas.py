"""Every week, cancel the NDAs still out for signature after 30 days, once a person approves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG

from dropbox_sign_provider.operators.approval import CancellationApprovalOperator
from dropbox_sign_provider.operators.signature_request import (
    CancelSignatureRequestOperator,
    ListSignatureRequestsOperator,
)

with DAG(
    dag_id="cancel_stale_ndas",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # two runs would race to cancel the same requests
) as dag:
    find = ListSignatureRequestsOperator(
        task_id="find",
        query="title:NDA",
        max_age=timedelta(days=30),
        require_approval=True,  # a person approves every selection, however small
    )
    approve = CancellationApprovalOperator(task_id="approve", selection=find.output)
    CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids=find.output,
        require_selection=True,  # only what find selected and signed
        approval_grant=approve.output,
        on_completed="ignore",  # signed or declined meanwhile: nothing to do
        wait_for_confirmation=True,
        deferrable=True,
    )
