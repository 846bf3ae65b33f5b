"""
Cancel Dropbox Sign signature requests by id, from the UI's trigger form.

The form validates the input before a run is created: only well-formed, distinct ids get through.
The run cancels each id, waits (on the triggerer) until Dropbox Sign confirms the cancellations it
queued, even when other ids failed, then logs a table of what happened to each id and fails naming
the ids that failed.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task

from dropbox_sign_provider.ids import SIGNATURE_REQUEST_ID_PATTERN
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.outcomes import outcome_table, report
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from dropbox_sign_provider.state import RequestState

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

#: A person pasting ids into a form cancels a handful; a long list is more likely a mistake than a
#: plan, and bulk clean-ups belong to dropbox_sign_expiry_cleanup with its dry run and its cap.
MAX_IDS = 50

DOC_MD = """
# Cancel Dropbox Sign signature requests

Cancels the signature requests you name, so that nobody can sign them any more.

**Cancellation is irreversible.** A cancelled request cannot be reopened: it has to be sent again.
Double-check the ids before you trigger.

## What a run does
1. **cancel**: asks Dropbox Sign to cancel each id. Dropbox Sign only *queues* a cancellation;
   ids that were already cancelled, signed by everyone or declined are recognised and reported,
   not cancelled twice. An id that does not exist (`not_found`) or belongs to someone else
   (`forbidden`) fails this task, naming the id, once every other id was handled.
2. **to_confirm**: picks the ids **cancel** queued, when the run waits for confirmation (see the
   parameter below). It runs even when **cancel** failed: what cancel queued is confirmed whatever
   happened to the other ids.
3. **confirm**: waits on the triggerer, without holding a worker slot, until each cancellation
   that **cancel** queued has really happened. When Dropbox Sign has not confirmed one after 60
   minutes, it is cancelled again, as Dropbox Sign recommends.
4. **summary**: logs a table of every id and its outcome and returns it (XCom); fails naming each
   id that failed, so the run fails too.

## Parameters
- **Signature request ids**: the requests to cancel, one per line, at most 50. Each is 16 to 64
  lowercase hex characters, as shown in the request's URL in Dropbox Sign (`...manage?guid=<id>`).
- **Wait for confirmation**: on (default), the run ends only once every cancellation is
  confirmed; off, it ends as soon as they are queued (outcome `cancel_requested`).
- **If already signed or declined**: `fail` (default) fails the run when a request was signed by
  everyone or declined before it could be cancelled, after every other id was handled; `ignore`
  reports it and succeeds.

## Outcomes
`canceled` (confirmed), `already_canceled`, `cancel_requested` (queued, not waited for),
`completed`, `declined`. A request that does not exist (`not_found`) or belongs to someone else
(`forbidden`) fails **cancel** and then **summary**, naming the id; the other ids are still
cancelled and confirmed.

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
    # The ids reach the operator as the list the form produced, not as its string rendering.
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
    # The form's on_completed is applied in the summary: the operator and the sensor take theirs
    # when the file is parsed, and judging at the end lets every other id be cancelled and
    # confirmed first.
    cancel = CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids="{{ params.signature_request_ids }}",
        on_completed="ignore",
        max_cancellations=MAX_IDS,
        **API_TASK_ARGS,
    )

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
    def summary(cancelled: dict[str, str] | None, confirmed: dict[str, str] | None) -> dict[str, str]:
        """
        Log every id with its outcome and return them; fail naming each id that failed (``not_found``,
        ``forbidden``, ...), and signed or declined requests when the run's ``on_completed`` is
        ``fail``.

        :param cancelled: the outcomes of **cancel**, even when it failed; ``None`` when it
            reported none.
        :param confirmed: the outcomes of **confirm**; ``None`` when it was skipped.
        """
        if cancelled is None:
            raise AirflowFailException(
                "Dropbox Sign cancellation failed: cancel reported no outcome; see its log"
            )
        outcomes = {**cancelled, **(confirmed or {})}
        judged = report(outcomes, get_current_context()["params"]["on_completed"])
        log.info("Dropbox Sign cancellations: %s\n%s", judged["message"], outcome_table(outcomes))
        if judged["failures"]:
            raise AirflowFailException(f"Dropbox Sign cancellation failed: {judged['message']}")
        return outcomes

    cancel >> queued
    summary(CANCEL_OUTCOMES, confirm.output)
