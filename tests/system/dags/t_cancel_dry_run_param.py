"""dry_run from a Param, through a template: False must cancel, True must only read."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator

with DAG(
    dag_id="t_cancel_dry_run_param",
    schedule=None,
    params={
        "ids": Param([], type="array", items={"type": "string"}),
        "dry": Param(True, type="boolean"),
    },
) as dag:
    CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids="{{ params.ids }}",
        dry_run="{{ params.dry }}",
    )
