"""Cancel, then wait on the triggerer until Dropbox Sign confirms each cancellation."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor

with DAG(
    dag_id="t_cancel_pipeline",
    schedule=None,
    params={"ids": Param([], type="array", items={"type": "string"})},
) as dag:
    cancel = CancelSignatureRequestOperator(
        task_id="cancel", signature_request_ids="{{ params.ids }}", on_completed="ignore"
    )
    # Same ids, same rules, one on the triggerer and one poking: they must agree.
    for task_id, deferrable in (("confirm", True), ("confirm_poke", False)):
        SignatureRequestCanceledSensor(
            task_id=task_id,
            signature_request_ids=cancel.output,
            deferrable=deferrable,
            on_completed="ignore",
            poke_interval=0.1,
            timeout=30,
            recancel_after=10,
        )
