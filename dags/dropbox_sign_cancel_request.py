"""
Cancel Dropbox Sign signature requests by id, from the UI's trigger form: preview, approve, cancel
and confirm. Parsing this file sends no request.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, XComArg

from dropbox_sign_provider.cancellation.ids import MAX_IDS_PER_RUN, SIGNATURE_REQUEST_ID_PATTERN
from dropbox_sign_provider.operators.approval import CancellationApprovalOperator
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.ui.listing import ui_conn_ids

#: A person pasting ids into a form cancels a handful; bulk clean-ups belong to the clean-up DAG.
MAX_IDS = MAX_IDS_PER_RUN
#: The connections a run may use: [dropbox_sign] ui_conn_ids, the ones the Dropbox Sign page offers.
#: Read when this file is parsed: a param's choices are part of the DAG.
CONN_IDS = ui_conn_ids() or ["dropbox_sign_default"]

DOC_MD = """
# Cancel Dropbox Sign signature requests

Cancels the signature requests you name. **Cancellation is irreversible**: a cancelled request
has to be sent again. Unpause this DAG first: a run triggered on a paused DAG stays *queued*.

1. **preview** reads each id once, cancelling nothing: its title, when it was sent, its signers and
   who signed, and what a cancel would do (`would_cancel`, `completed`, `declined`,
   `already_canceled`, `not_found`, `forbidden`). It signs what it read.
2. **approve** shows the preview in the Airflow UI (the run's *Required Actions*) when approval is
   required (the deployment's `[dropbox_sign] require_approval`, on by default, or the form's) and
   something would be cancelled. **Reject** cancels nothing; no answer within
   `[dropbox_sign] approval_timeout` cancels nothing and fails the run. Who may answer is the
   deployment's (`approvers`, `four_eyes`). An Approve grants exactly the ids the form listed.
3. **cancel** checks the grant, cancels each id the preview found out for signature, then (unless
   *Wait for confirmation* is off) waits on the triggerer until Dropbox Sign confirms each
   (re-cancelling after 60 minutes). It then logs a table of every id and fails naming each id
   that does not exist (`not_found`), is another sender's (`forbidden`), or was signed or declined
   when *If already signed or declined* is `fail`.

Confirmation polls every `[dropbox_sign] poke_interval` seconds, or on Dropbox Sign's events with
`[dropbox_sign] event_first`. Uses the connection chosen in the form, one of
`[dropbox_sign] ui_conn_ids` (`dropbox_sign_default` unless the deployment lists others). The
*Dropbox Sign* page of the Airflow UI lists an account's open requests and triggers this DAG with
the ones you select.
"""

with DAG(
    dag_id="dropbox_sign_cancel_request",
    description="Cancel Dropbox Sign signature requests by id (irreversible) and confirm it",
    schedule=None,
    catchup=False,
    doc_md=DOC_MD,
    tags=["dropbox-sign"],
    # The form's values reach the operators as values, not as text.
    render_template_as_native_obj=True,
    params={
        "signature_request_ids": Param(
            type="array",
            items={"type": "string", "pattern": SIGNATURE_REQUEST_ID_PATTERN},
            minItems=1,
            maxItems=MAX_IDS,
            uniqueItems=True,
            title="Signature request ids",
            description=f"One id per line, at most {MAX_IDS}: 16 to 64 lowercase hex characters "
            "each, e.g. fa5c8a0b0f492d768749333ad6fcc214c111e967. Cancellation cannot be undone.",
        ),
        "dropbox_sign_conn_id": Param(
            CONN_IDS[0],
            type="string",
            enum=CONN_IDS,
            title="Dropbox Sign connection",
            description="The account whose requests are cancelled: one of the connections the "
            "deployment lists in [dropbox_sign] ui_conn_ids.",
        ),
        "require_approval": Param(
            True,
            type="boolean",
            title="Ask for approval",
            description="A person approves in the Airflow UI after reading the preview. Off: only "
            "where the deployment allows it ([dropbox_sign] require_approval).",
        ),
        "wait_for_confirmation": Param(
            True,
            type="boolean",
            title="Wait for confirmation",
            description="Finish only once Dropbox Sign confirms every cancellation.",
        ),
        "on_completed": Param(
            "fail",
            type="string",
            enum=["fail", "ignore"],
            title="If already signed or declined",
            description="fail: fail the run when a request was signed by everyone or declined. "
            "ignore: report it and succeed.",
        ),
    },
) as dag:
    preview = CancelSignatureRequestOperator(
        task_id="preview",
        signature_request_ids="{{ params.signature_request_ids }}",
        dry_run=True,
        require_approval="{{ params.require_approval }}",
        max_cancellations=MAX_IDS,
        dropbox_sign_conn_id="{{ params.dropbox_sign_conn_id }}",
        retries=2,
        retry_delay=timedelta(minutes=1),
    )
    # What preview read and signed: the form shows it, and cancel acts on nothing else.
    selection = XComArg(preview, key="selection")
    approve = CancellationApprovalOperator(
        task_id="approve", selection=selection, dropbox_sign_conn_id="{{ params.dropbox_sign_conn_id }}"
    )
    cancel = CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids=selection,
        require_selection=True,
        approval_grant=approve.output,
        wait_for_confirmation="{{ params.wait_for_confirmation }}",
        on_completed="{{ params.on_completed }}",
        deferrable=True,
        max_cancellations=MAX_IDS,
        dropbox_sign_conn_id="{{ params.dropbox_sign_conn_id }}",
        retries=2,
        retry_delay=timedelta(minutes=1),
    )
    preview >> approve >> cancel
