"""Cancel the signature requests named in the trigger form, once a person approves, and confirm."""

from __future__ import annotations

from airflow.sdk import DAG, Param, XComArg

from dropbox_sign_provider.cancellation.ids import SIGNATURE_REQUEST_ID_PATTERN
from dropbox_sign_provider.operators.approval import CancellationApprovalOperator
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator

with DAG(
    dag_id="cancel_signature_requests",
    schedule=None,
    params={
        "signature_request_ids": Param(
            type="array",
            items={"type": "string", "pattern": SIGNATURE_REQUEST_ID_PATTERN},
            minItems=1,
            maxItems=20,
            title="Signature request ids",
        ),
    },
) as dag:
    preview = CancelSignatureRequestOperator(
        task_id="preview",
        signature_request_ids="{{ params.signature_request_ids }}",
        dry_run=True,  # reads each id once, cancels nothing
        max_cancellations=20,
    )
    selection = XComArg(preview, key="selection")  # what preview read, signed
    approve = CancellationApprovalOperator(task_id="approve", selection=selection)
    CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids=selection,
        require_selection=True,  # only the ids preview signed
        approval_grant=approve.output,
        wait_for_confirmation=True,
        deferrable=True,
    )
