"""Many ids with mixed outcomes: every one is processed, then the task fails once, without retrying."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator

with DAG(
    dag_id="t_cancel_mixed",
    schedule=None,
    params={"ids": Param([], type="array", items={"type": "string"})},
) as dag:
    CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids="{{ params.ids }}",
        retries=1,
        retry_delay=timedelta(0),
    )
