"""
Cancel Dropbox Sign signature requests by id, from the UI's trigger form.

The form validates the input before a run is created: only well-formed, distinct ids get through.
The run reads each id once (a dry run) and, unless the deployment and the run's form both leave
approval off, asks a person in the Airflow UI to approve, showing each request's title, signers and
what the cancel would do. Approved, it cancels the previewed ids that would cancel, waits (on the
triggerer) until Dropbox Sign confirms the cancellations it queued, even when other ids failed,
then logs a table of what happened to each id and fails naming the ids that failed. Rejected, or
not answered in time, it cancels nothing and says so.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation.approval import ANSWER_KEY, GRANT_KEY, decision
from dropbox_sign_provider.cancellation.grants import approver_of
from dropbox_sign_provider.cancellation.ids import SIGNATURE_REQUEST_ID_PATTERN
from dropbox_sign_provider.cancellation.outcomes import Outcome, outcome_table, report
from dropbox_sign_provider.cancellation.policy import CancellationPolicy
from dropbox_sign_provider.cancellation.preview import would_cancel
from dropbox_sign_provider.cancellation.state import RequestState
from dropbox_sign_provider.hooks.connection import grant_key
from dropbox_sign_provider.operators.approval import CancellationApprovalOperator
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor

log = logging.getLogger(__name__)

#: Seconds between two checks of the queued cancellations, one API call per id still pending.
#: Dropbox Sign usually confirms within seconds; a test or demo deployment whose API answers faster
#: sets the environment variable (on every Airflow component, as it is read when the file is parsed).
CONFIRM_POKE_INTERVAL = float(os.environ.get("DROPBOX_SIGN_CONFIRM_POKE_INTERVAL", "15"))

#: Confirm on Dropbox Sign's ``signature_request_canceled`` events first, polling every
#: ``CONFIRM_POKE_INTERVAL`` only as the fallback (which can then be minutes). Needs the callback
#: receiver set up (the provider's *Events and callbacks* page); environment variable, read when the
#: file is parsed.
CONFIRM_EVENT_FIRST = os.environ.get("DROPBOX_SIGN_EVENT_FIRST", "").strip().lower() in ("1", "true", "yes")

#: Both API tasks are idempotent (the operator asks Dropbox Sign what state a refused id is in),
#: so a task that failed on a lasting API outage is safe to run again.
API_TASK_ARGS: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(minutes=1)}

#: What **cancel** reported for each id: its result, or, when it failed on some ids, the outcomes it
#: pushed before failing, so that the cancellations it did queue are confirmed all the same. ``None``
#: when it reported nothing (it failed before sending anything).
CANCEL_OUTCOMES = "{{ ti.xcom_pull(task_ids='cancel', key='outcomes') or ti.xcom_pull(task_ids='cancel') }}"

#: What **preview** said a cancel would do to each id.
PREVIEW_OUTCOMES = "{{ ti.xcom_pull(task_ids='preview') }}"
#: The person's answer: ``chosen_options``, ``responded_by_user`` (``None`` when the approval timed
#: out); ``None`` when nobody was asked.
ANSWER = f"{{{{ ti.xcom_pull(task_ids='approve', key='{ANSWER_KEY}') }}}}"
GRANT = f"{{{{ ti.xcom_pull(task_ids='approve', key='{GRANT_KEY}') }}}}"

#: A person pasting ids into a form cancels a handful; a long list is more likely a mistake than a
#: plan, and bulk clean-ups belong to dropbox_sign_expiry_cleanup with its dry run and its cap.
MAX_IDS = 50

DOC_MD = """
# Cancel Dropbox Sign signature requests

Cancels the signature requests you name, so that nobody can sign them any more.

**Cancellation is irreversible.** A cancelled request cannot be reopened: it has to be sent again.
Double-check the ids before you trigger.

## What a run does
1. **preview**: reads each id once, cancelling nothing: its title, when it was sent, its signers
   and which of them signed, and what a cancel would do (`would_cancel`, `completed`, `declined`,
   `already_canceled`, `not_found`, `forbidden`).
2. **ask**: goes to **approve** when approval is required (by the deployment's
   `[dropbox_sign] require_approval`, on by default, or by the run's form) and some request would
   be cancelled; otherwise straight to **cancel**.
3. **approve**: shows the preview in the Airflow UI (the run's *Required Actions*) and waits for a
   person to press **Approve** or **Reject**, holding no worker slot (Airflow 3.3: the task waits
   as *awaiting input*; 3.1 and 3.2: it waits on the triggerer). **Reject** skips **cancel**:
   nothing is cancelled. Without an answer within `[dropbox_sign] approval_timeout` (a day by
   default) it counts as **Reject**, and the run fails so that somebody notices. Who may answer,
   and whether the user who triggered the run may approve it, are the deployment's
   (`approvers`, `four_eyes`). An Approve hands **cancel** a signed grant for exactly the ids the
   form listed.
4. **cancel**: checks the grant, then asks Dropbox Sign to cancel each id **preview** found out for
   signature (with approval off: every id, as given). It cancels nothing when approval was
   required and no valid grant covers every id: an approval marked successful by hand, or an XCom
   rewritten through the REST API, can make a run cancel less, never more. Dropbox Sign only
   *queues* a cancellation; ids that were cancelled, signed by everyone or declined in the
   meantime are recognised and reported, not cancelled. With approval off, an id that does not
   exist (`not_found`) or belongs to someone else (`forbidden`) fails this task, naming the id,
   once every other id was handled.
5. **to_confirm**: picks the ids **cancel** queued, when the run waits for confirmation (see the
   parameters below). It runs even when **cancel** failed: what cancel queued is confirmed whatever
   happened to the other ids.
6. **confirm**: waits on the triggerer, without holding a worker slot, until each cancellation
   that **cancel** queued has really happened. When Dropbox Sign has not confirmed one after 60
   minutes, it is cancelled again, as Dropbox Sign recommends.
7. **summary**: logs who approved or rejected, a table of every id and its outcome, and the ids
   that changed between the preview and the cancel, and returns the outcomes (XCom); fails naming
   each id that failed, and when the approval timed out, so the run fails too. A rejected run
   succeeds: "rejected by *name*: nothing was cancelled" (unless an id does not exist or is
   another sender's).

## Parameters
- **Signature request ids**: the requests to cancel, one per line, at most 50. Each is 16 to 64
  lowercase hex characters, as shown in the request's URL in Dropbox Sign (`...manage?guid=<id>`).
- **Ask for approval** (default on): a person approves in the Airflow UI, after reading the
  preview, before anything is cancelled. Off: the run cancels right after the preview, but only
  where the deployment allows it (`[dropbox_sign] require_approval = False`); a run can add an
  approval, never remove one the deployment requires.
- **Wait for confirmation**: on (default), the run ends only once every cancellation is
  confirmed; off, it ends as soon as they are queued (outcome `cancel_requested`).
- **If already signed or declined**: `fail` (default) fails the run when a request was signed by
  everyone or declined before it could be cancelled, after every other id was handled; `ignore`
  reports it and succeeds.

## Outcomes
`canceled` (confirmed), `already_canceled`, `cancel_requested` (queued, not waited for),
`completed`, `declined`, `not_approved` (rejected, or the approval timed out: not cancelled). A
request that does not exist (`not_found`) or belongs to someone else (`forbidden`) fails
**summary**, naming the id; the other ids are still cancelled and confirmed.

Uses the `dropbox_sign_default` connection. **confirm** checks every 15 seconds (environment
variable `DROPBOX_SIGN_CONFIRM_POKE_INTERVAL`), or, with `DROPBOX_SIGN_EVENT_FIRST=true` and the callback
receiver set up, as soon as Dropbox Sign's event arrives.
"""

with DAG(
    dag_id="dropbox_sign_cancel_request",
    description="Cancel Dropbox Sign signature requests by id (irreversible) and confirm it",
    schedule=None,
    catchup=False,
    doc_md=DOC_MD,
    tags=["dropbox-sign"],
    # The ids and grants reach the operators as the values the tasks produced, not as text.
    render_template_as_native_obj=True,
    params={
        "signature_request_ids": Param(
            type="array",
            items={"type": "string", "pattern": SIGNATURE_REQUEST_ID_PATTERN},
            minItems=1,
            maxItems=MAX_IDS,
            uniqueItems=True,
            title="Signature request ids",
            description="One id per line: 16 to 64 lowercase hex characters each, "
            "e.g. fa5c8a0b0f492d768749333ad6fcc214c111e967. Cancellation cannot be undone.",
        ),
        "require_approval": Param(
            True,
            type="boolean",
            title="Ask for approval",
            description="A person approves in the Airflow UI, after reading what each request is and "
            "who signed it, before anything is cancelled. Off: cancel right after the preview, where "
            "the deployment allows it ([dropbox_sign] require_approval).",
        ),
        "wait_for_confirmation": Param(
            True,
            type="boolean",
            title="Wait for confirmation",
            description="Finish only once Dropbox Sign confirms every cancellation. "
            "Off: finish as soon as the cancellations are queued.",
        ),
        "on_completed": Param(
            "fail",
            type="string",
            enum=["fail", "ignore"],
            title="If already signed or declined",
            description="fail: fail the run when a request was signed by everyone or declined "
            "before it could be cancelled. ignore: report it and succeed.",
        ),
    },
) as dag:
    # Reads only, whatever the form says: what a person approves, and what cancel is given.
    preview = CancelSignatureRequestOperator(
        task_id="preview",
        signature_request_ids="{{ params.signature_request_ids }}",
        dry_run=True,
        max_cancellations=MAX_IDS,
        **API_TASK_ARGS,
    )

    @task.branch
    def ask() -> str:
        """
        Go to **approve** when approval is required (by the deployment or the run) and some request
        would be cancelled, else straight to **cancel**; push (XCom ``to_cancel``) the ids
        **cancel** is given. This only routes: **cancel** itself refuses ids that no approval grant
        covers when approval is required.
        """
        context = get_current_context()
        params = context["params"]
        previewed = context["ti"].xcom_pull(task_ids="preview", key="preview")
        asking = params["require_approval"] or CancellationPolicy.from_config().require_approval
        # With approval off, cancel gets every id, as before approvals existed: it reports
        # not_found and forbidden ids itself. Approved, it gets exactly what the person saw would go.
        to_cancel = would_cancel(previewed) if asking else list(params["signature_request_ids"])
        context["ti"].xcom_push(key="to_cancel", value=to_cancel)
        return "approve" if asking and to_cancel else "cancel"

    # The form's on_completed is applied in the summary: the operator and the sensor take theirs
    # when the file is parsed, and judging at the end lets every other id be cancelled and
    # confirmed first.
    cancel = CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids="{{ ti.xcom_pull(task_ids='ask', key='to_cancel') }}",
        on_completed="ignore",
        max_cancellations=MAX_IDS,
        # The form may add an approval to the deployment's policy, never remove one it requires;
        # the operator checks the grant of approve before sending anything.
        require_approval="{{ params.require_approval }}",
        approval_grant=GRANT,
        # Runs after an approval, or when ask went straight here (approve is then skipped); a
        # rejection skips it, and a failed preview or approval stops it.
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        **API_TASK_ARGS,
    )
    asked = ask()
    # Shows what preview read and signed; an Approve grants exactly the ids it showed.
    approve = CancellationApprovalOperator(
        task_id="approve", selection="{{ ti.xcom_pull(task_ids='preview', key='selection') }}"
    )
    preview >> asked >> [approve, cancel]
    approve >> cancel

    # Runs whether cancel succeeded or failed: a failure on one id must not leave the cancellations
    # queued for the others unconfirmed.
    @task.short_circuit(trigger_rule=TriggerRule.ALL_DONE, ignore_downstream_trigger_rules=False)
    def to_confirm(cancelled: dict[str, str] | None) -> dict[str, str]:
        """
        The ids **cancel** queued, when the run was asked to wait: **confirm** waits on them. Nothing
        (and **confirm** is skipped) when it was not asked to wait or nothing was queued; the summary
        runs either way.

        :param cancelled: the outcomes of **cancel**, even when it failed; ``None`` when it
            reported none.
        """
        if not get_current_context()["params"]["wait_for_confirmation"]:
            return {}
        queued = RequestState.CANCEL_REQUESTED.value
        return {sr_id: outcome for sr_id, outcome in (cancelled or {}).items() if outcome == queued}

    queued = to_confirm(CANCEL_OUTCOMES)
    confirm = SignatureRequestCanceledSensor(
        task_id="confirm",
        # The operator's outcomes, not bare ids: these were queued by cancel, so they may be
        # cancelled again after 60 minutes without confirmation.
        signature_request_ids=queued,
        deferrable=True,
        poke_interval=CONFIRM_POKE_INTERVAL,
        event_first=CONFIRM_EVENT_FIRST,
        on_completed="ignore",
        **API_TASK_ARGS,
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def summary(
        previewed: dict[str, str] | None,
        asked: str | None,
        answer: dict[str, Any] | None,
        grant: Any,
        cancelled: dict[str, str] | None,
        confirmed: dict[str, str] | None,
    ) -> dict[str, str]:
        """
        Log who decided, every id with its outcome and the ids that changed since the preview, and
        return the outcomes; fail naming each id that failed (``not_found``, ``forbidden``, ...),
        signed or declined requests when the run's ``on_completed`` is ``fail``, and an approval
        that timed out.

        :param previewed: the outcomes of **preview**; ``None`` when it failed.
        :param asked: where **ask** went: ``approve`` when a person was asked.
        :param answer: the answer **approve** kept; ``None`` when nobody was asked or nobody answered.
        :param grant: the approval grant of **approve**: who approved, as **cancel** verified it.
        :param cancelled: the outcomes of **cancel**, even when it failed; ``None`` when it
            reported none (it did not run).
        :param confirmed: the outcomes of **confirm**; ``None`` when it was skipped.
        """
        params = get_current_context()["params"]
        if previewed is None:
            raise AirflowFailException("Nothing was cancelled: preview failed; see its log")
        # Asked, with no answer kept (the approval failed): not approved.
        verdict = decision(answer) if asked == "approve" else None
        if verdict is not None and not verdict.approved:
            outcomes = {
                sr_id: str(Outcome.NOT_APPROVED) if outcome == Outcome.WOULD_CANCEL else outcome
                for sr_id, outcome in previewed.items()
            }
            decided = f"{verdict}: nothing was cancelled"
            # Nothing was tried, so a request signed or declined meanwhile is no failure of this run;
            # an id that does not exist, or is another sender's, still is.
            judged = report(outcomes, "ignore")
            log.info(
                "Dropbox Sign cancellations %s. %s\n%s", decided, judged["message"], outcome_table(outcomes)
            )
            # Only a person's rejection is a decision; no answer, or an Approve the policy refused,
            # is for somebody to look at.
            if verdict.by is None or verdict.refused or judged["failures"]:
                raise AirflowFailException(f"Dropbox Sign cancellations {decided}. {judged['message']}")
            return outcomes
        if cancelled is None:
            raise AirflowFailException(
                "Dropbox Sign cancellation failed: cancel reported no outcome; see its log and approve's"
            )
        if verdict is not None:
            # Who approved, by the grant cancel checked: the kept answer only words a report.
            context = get_current_context()
            approver = approver_of(
                grant,
                key=lambda: grant_key(DEFAULT_CONN_NAME),
                dag_id=context["dag"].dag_id,
                run_id=context["run_id"],
            )
            decided = f"approved by {approver}" if approver else "approve kept no valid approval grant"
        elif not params["require_approval"]:
            decided = "approval not asked for"
        else:
            decided = "nothing to approve"
        # Ids the preview found signed, declined, gone or unknown were not given to cancel.
        outcomes = {**previewed, **cancelled, **(confirmed or {})}
        changed = {
            sr_id: outcomes[sr_id]
            for sr_id, outcome in previewed.items()
            if outcome == Outcome.WOULD_CANCEL
            and sr_id in cancelled
            and cancelled[sr_id] not in (Outcome.CANCEL_REQUESTED, Outcome.CANCELED)
        }
        if changed:
            decided += "; changed since the preview, so not cancelled: " + ", ".join(
                f"{sr_id} ({outcome})" for sr_id, outcome in changed.items()
            )
        judged = report(outcomes, params["on_completed"])
        log.info(
            "Dropbox Sign cancellations, %s: %s\n%s", decided, judged["message"], outcome_table(outcomes)
        )
        if judged["failures"]:
            raise AirflowFailException(f"Dropbox Sign cancellation failed ({decided}): {judged['message']}")
        return outcomes

    cancel >> queued
    summary(
        PREVIEW_OUTCOMES, "{{ ti.xcom_pull(task_ids='ask') }}", ANSWER, GRANT, CANCEL_OUTCOMES, confirm.output
    )
