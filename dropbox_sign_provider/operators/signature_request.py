"""The operator that cancels Dropbox Sign signature requests: :class:`CancelSignatureRequestOperator`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, conf
from airflow.sdk import BaseOperator

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation import wait_settings
from dropbox_sign_provider.cancellation.accepted import AcceptedCancels, will_retry
from dropbox_sign_provider.cancellation.grants import (
    SELECTION,
    GrantError,
    authorize,
    given_grant,
    mint,
)
from dropbox_sign_provider.cancellation.ids import (
    dry_run_flag,
    normalize_signature_request_ids,
    resolved_at_run_time,
    validate_signature_request_id,
)
from dropbox_sign_provider.cancellation.outcomes import (
    CancellationEvent,
    Outcome,
    accept_refusals,
    finish,
    log_outcomes,
    report,
    summarize,
)
from dropbox_sign_provider.cancellation.policy import DISARM_VARIABLE, CancellationPolicy
from dropbox_sign_provider.cancellation.preview import RequestPreview, request_preview, would_cancel
from dropbox_sign_provider.cancellation.selection import (
    search_of,
    selection_batches,
    summaries_of,
    unsigned_reason,
)
from dropbox_sign_provider.cancellation.state import RequestState, request_state
from dropbox_sign_provider.cancellation.watch import ConfirmationWait, run_step
from dropbox_sign_provider.events.wakeups import Wakeups
from dropbox_sign_provider.exceptions import DropboxSignError
from dropbox_sign_provider.hooks.connection import grant_key
from dropbox_sign_provider.links import DropboxSignRequestLink, details_url

# Kept importable from here, where DAGs written before it had a module of its own import it.
from dropbox_sign_provider.operators.list_signature_requests import (
    OVER_CAP_CHOICES as OVER_CAP_CHOICES,
)
from dropbox_sign_provider.operators.list_signature_requests import (
    ListSignatureRequestsOperator as ListSignatureRequestsOperator,
)
from dropbox_sign_provider.triggers.signature_request import defer_until_confirmed

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

#: The default of ``max_cancellations``: a cancel is irreversible, so a task given more ids than this
#: (a template that rendered the wrong list, a search that matched the whole account) sends nothing.
#: ``max_cancellations=None`` lifts the cap.
DEFAULT_MAX_CANCELLATIONS = 1000

#: The XCom key under which a dry run keeps what it read of each id
#: (:class:`~dropbox_sign_provider.cancellation.preview.RequestPreview`), for a person to approve.
PREVIEW_XCOM_KEY = "preview"
#: The XCom key under which a dry run keeps the same, signed (a selection grant): what an approval
#: form shows, and the ids a person may approve (those that would be cancelled).
SELECTION_XCOM_KEY = "selection"
#: The XCom key under which a cancel step keeps each refused id and Dropbox Sign's reason.
REFUSALS_XCOM_KEY = "refusals"


class CancelSignatureRequestOperator(BaseOperator):
    """
    Cancel one or many Dropbox Sign signature requests; idempotent and safe to retry.

    For each id the cancel call is sent; when Dropbox Sign refuses it (a 4xx other than 429), one
    ``GET`` decides what happened instead of guessing from the message: ``already_canceled``
    (410), ``completed``, ``declined``, ``expired`` (nothing to cancel: never a failure),
    ``not_found`` (404), ``forbidden`` (403) or ``unauthorized`` (401); a request still out for
    signature is ``refused``, with Dropbox Sign's reason in the XCom ``refusals``. A refusal fails
    the task (without a retry) for ids a person named, and is only reported for a list step's
    selection, where one refusal must not stop a clean-up. A 409 (an identical request in flight)
    counts as ``cancel_requested``. Every id is processed even when
    some fail; the task then fails once, listing each failing id and why. That failure skips the
    task's retries when every failing id got a verdict (``not_found``, ``forbidden``, ...), and
    uses them when some id got none (the API kept failing, or answered something unexpected).
    With ``wait_for_confirmation``, the ids that were queued are waited for first, so a failure
    never leaves queued cancellations unconfirmed.

    The cancel call only queues the cancellation. With ``wait_for_confirmation`` the task finishes
    only once Dropbox Sign confirms each one (see
    :class:`~dropbox_sign_provider.sensors.signature_request.SignatureRequestCanceledSensor`, whose
    rules it follows), on the triggerer when ``deferrable``.

    Returns (XCom) a mapping id -> outcome, which the sensor accepts as its input.

    :param signature_request_ids: one id or a list of ids (templated: Params, XCom, ``expand``);
        duplicates are dropped, order is kept. Empty input (``[]``, ``""``, ...) cancels nothing
        and succeeds with ``{}``. Also a :class:`ListSignatureRequestsOperator`'s selection (its
        ``.output``: every batch, or one batch each through ``expand()``), cancelled only as far as
        its signature allows, and previewed from its summaries without a read per id; or a list
        of such summaries.
    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection (templated: a param may choose it).
    :param on_completed: ``fail`` (default) or ``ignore`` for requests that were signed or declined
        before they could be cancelled (templated, checked before anything is sent).
    :param max_cancellations: fail before cancelling anything when given more ids than this
        (default 1,000); ``None`` lifts the cap.
    :param dry_run: ``GET`` each id and report what would happen; cancel nothing. Templated: a
        boolean, or ``"true"``/``"false"`` in any case, as ``"{{ params.dry_run }}"`` renders.
        The dry run also pushes the XCom ``preview``: per id, its title, when it was sent, its
        signers and which of them signed, and the outcome (see
        :func:`~dropbox_sign_provider.cancellation.preview.preview_markdown` to show it in an approval form).
    :param wait_for_confirmation: finish only once every cancellation is confirmed (templated, like
        ``dry_run``).
    :param deferrable: wait for confirmation on the triggerer.
    :param event_first: while waiting, read an id at once when a Dropbox Sign event names it,
        polling every ``poke_interval`` only as the fallback (see the sensor's ``event_first``).
        ``None`` (default): the deployment's ``[dropbox_sign] event_first``, read when the task runs.
    :param poke_interval: seconds (or a ``timedelta``) between polls while waiting. ``None``
        (default): the deployment's ``[dropbox_sign] poke_interval``, read when the task runs.
    :param timeout: seconds (or a ``timedelta``) to wait for confirmation before ids end as
        ``timeout``; shorter than ``recancel_after`` is fine (the log then says no re-cancel can
        happen).
    :param recancel_after: seconds (or a ``timedelta``) after a cancel without confirmation before
        cancelling again.
    :param max_cancel_attempts: cancels per id at most, counting the first one.
    :param require_approval: cancel only what a person approved (an ``approval_grant`` covering
        every id), whatever the deployment's policy says. Templated, like ``dry_run``. It can only
        add to ``[dropbox_sign] require_approval``, which applies to ids named at run time.
    :param approval_grant: the grant of a
        :class:`~dropbox_sign_provider.operators.approval.CancellationApprovalOperator` (its XCom
        ``grant``), templated. Checked before anything is sent: its signature, this run, and that
        it covers every id.
    :param require_selection: cancel only ids a provider step selected, as a ``selection_grant``
        proves (the clean-up's batches): ids injected anywhere else are refused.
    :param selection_grant: the grant of a step that selected the ids, handed apart from them
        (templated); a list step's batches carry their own.
    """

    # BaseOperator already has a dry_run() method: the templated value is kept as dry_run_setting,
    # and is_dry_run reads it.
    template_fields: Sequence[str] = (
        "signature_request_ids",
        "dry_run_setting",
        "require_approval_setting",
        "approval_grant",
        "selection_grant",
        "wait_for_confirmation",
        "on_completed",
        "dropbox_sign_conn_id",
    )
    operator_extra_links = (DropboxSignRequestLink(),)
    ui_color = "#fde8e8"

    def __init__(
        self,
        *,
        signature_request_ids: Any,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        on_completed: str = "fail",
        max_cancellations: int | None = DEFAULT_MAX_CANCELLATIONS,
        dry_run: bool | str = False,
        wait_for_confirmation: bool | str = False,
        event_first: bool | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: wait_settings.Duration | None = None,
        timeout: wait_settings.Duration = wait_settings.DEFAULT_TIMEOUT,
        recancel_after: wait_settings.Duration = wait_settings.DEFAULT_RECANCEL_AFTER,
        max_cancel_attempts: int = wait_settings.DEFAULT_MAX_CANCEL_ATTEMPTS,
        require_approval: bool | str = False,
        approval_grant: Any = None,
        require_selection: bool = False,
        selection_grant: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Literal settings fail when the DAG file is parsed; the deployment's defaults and templated
        # values are read when the task runs.
        self.wait_settings = wait_settings.WaitSettings.checked(
            wait_settings.DEFAULT_POLL_INTERVAL if poke_interval is None else poke_interval,
            timeout,
            recancel_after,
            max_cancel_attempts,
            "fail" if resolved_at_run_time(on_completed) else on_completed,
            bool(event_first),
        )
        self._poke_interval_given = poke_interval is not None
        self._event_first_given = event_first is not None
        if event_first is not None and not isinstance(event_first, bool):
            raise ValueError(f"event_first {event_first!r} must be True or False")
        if not resolved_at_run_time(wait_for_confirmation):
            dry_run_flag(wait_for_confirmation, "wait_for_confirmation")
        self.on_completed = on_completed
        if max_cancellations is not None and (
            isinstance(max_cancellations, bool)
            or not isinstance(max_cancellations, int)
            or max_cancellations < 0
        ):
            raise ValueError(
                f"max_cancellations {max_cancellations!r} must be a non-negative integer or None"
            )
        # Literals fail when the DAG file is parsed; templates and XComs once rendered, in execute().
        # (A mapped task is built again with its own value: one batch of a list step's selection.)
        if (
            not resolved_at_run_time(signature_request_ids)
            and selection_batches(signature_request_ids) is None
        ):
            normalize_signature_request_ids(signature_request_ids)
        if not resolved_at_run_time(dry_run):
            dry_run_flag(dry_run)
        if not resolved_at_run_time(require_approval):
            dry_run_flag(require_approval, "require_approval")
        if not isinstance(require_selection, bool):
            raise ValueError(f"require_selection {require_selection!r} must be True or False")
        # Ids written in the DAG file are the deployment's code; anything rendered is not.
        self.ids_named_at_run_time = resolved_at_run_time(signature_request_ids)
        self.require_approval_setting = require_approval
        self.approval_grant = approval_grant
        self.require_selection = require_selection
        self.selection_grant = selection_grant
        self.signature_request_ids = signature_request_ids
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.dry_run_setting = dry_run
        self.max_cancellations = max_cancellations
        self.wait_for_confirmation = wait_for_confirmation
        self.deferrable = deferrable

    @property
    def is_dry_run(self) -> bool:
        """
        Whether this run only reads: ``dry_run`` as rendered.

        :raises ValueError: naming the value, when it is not a boolean or ``"true"``/``"false"``.
        """
        return dry_run_flag(self.dry_run_setting)

    def execute(self, context: Context) -> dict[str, str]:
        """Validate every id and ``dry_run``, apply the cap, then cancel (or preview) each one."""
        # Every rendered setting is checked before the first cancel, naming the value.
        dry_run = self.is_dry_run
        wait = dry_run_flag(self.wait_for_confirmation, "wait_for_confirmation")
        wait_settings.check_on_completed(self.on_completed)
        self.wait_settings = wait_settings.configured(
            replace(self.wait_settings, on_completed=self.on_completed),
            poke_interval_given=self._poke_interval_given,
            event_first_given=self._event_first_given,
        )
        selection = selection_batches(self.signature_request_ids)
        if selection is None:
            ids = normalize_signature_request_ids(self.signature_request_ids)
            known = _summaries(self.signature_request_ids)
        else:
            ids = list(dict.fromkeys(validate_signature_request_id(i) for b in selection for i in b["ids"]))
            known = {s["signature_request_id"]: s for s in summaries_of(selection)}
            unsigned = unsigned_reason(selection)
            if unsigned is not None and not dry_run:
                self.log.warning("Previewing only: %s", unsigned)
                dry_run = True
        if self.max_cancellations is not None and len(ids) > self.max_cancellations:
            raise AirflowFailException(
                f"Refusing to cancel {len(ids)} signature requests: more than max_cancellations="
                f"{self.max_cancellations}. Nothing was cancelled. Check the ids, or raise the cap "
                "(max_cancellations=None lifts it)."
            )
        if not ids and not known:
            self.log.info("No signature requests given: nothing to cancel")
            return {}
        # The link is read for every task instance; an empty one shows no button.
        link = details_url(ids[0]) if len(ids) == 1 else ""
        context["ti"].xcom_push(key=DropboxSignRequestLink().xcom_key, value=link)
        # Imported here, not at the top: every DAG file that uses the operator imports this module,
        # and the HTTP clients behind the hook are needed only to run it.
        from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

        hook = DropboxSignHook(self.dropbox_sign_conn_id)
        if dry_run:
            return self._preview(hook, ids, context, known)
        if selection is None:
            self._authorize(ids, context, self.selection_grant)
        else:
            for batch in selection:
                if batch["ids"]:
                    self._authorize(batch["ids"], context, batch)
        # What a preview found and left out of the selection (signed, not found, ...) is reported
        # with the rest: an id a person named that cannot be cancelled still fails the task.
        previewed = {sr_id: str(s["outcome"]) for sr_id, s in known.items() if sr_id not in ids}

        outcomes: dict[str, str] = {}
        errors: dict[str, str] = {}
        accepted = AcceptedCancels.of(context["ti"], self.log)
        try:
            for sr_id in ids:
                if sr_id in accepted.earlier:
                    # Accepted by an earlier try of this task: this run's own, not sent again.
                    outcomes[sr_id] = str(Outcome.CANCEL_REQUESTED)
                    continue
                try:
                    outcomes[sr_id], reason = self._cancel(hook, sr_id)
                except DropboxSignError as error:
                    outcomes[sr_id], errors[sr_id] = str(Outcome.ERROR), str(error)
                    # Named with the error in the summary: one line per id would flood a large batch.
                    self.log.debug("Signature request %s: no verdict: %s", sr_id, error)
                    continue
                if reason is not None:
                    errors[sr_id] = reason
                if outcomes[sr_id] == Outcome.CANCEL_REQUESTED:
                    accepted.add(sr_id)
                self.log.debug("Signature request %s: %s", sr_id, outcomes[sr_id])
        finally:
            # Before a failure, a deferral or a kill: a retry must find what was accepted.
            accepted.flush()

        outcomes = {**previewed, **outcomes}
        judged = self._judged(report(outcomes, self.wait_settings.on_completed, errors), context)
        failures = judged["failures"]
        queued = Outcome.CANCEL_REQUESTED in outcomes.values()
        if failures:
            # Keep the partial result where a summary task or a person can read it.
            context["ti"].xcom_push(key="outcomes", value=outcomes)
        # With cancellations queued and a wait asked for, the failures are reported after the wait:
        # failing now would leave the queued ones unconfirmed and never re-cancelled.
        if not wait or (failures and not queued):
            return self._conclude(judged, context)
        return self._wait(hook, outcomes, errors, context)

    def _judged(self, event: CancellationEvent, context: Context) -> CancellationEvent:
        """
        The report as this task judges it: refusals fail it for ids a person chose, and are only
        reported for requests a rule selected (a list step's selection), where one refusal must
        not stop a clean-up. Each refusal and its reason is kept in the XCom ``refusals``.
        """
        selection = selection_batches(self.signature_request_ids)
        if selection is not None and search_of(selection) is not None:
            event = accept_refusals(event)
        if event.get("refusals"):
            context["ti"].xcom_push(key=REFUSALS_XCOM_KEY, value=event["refusals"])
        return event

    def _authorize(self, ids: list[str], context: Context, selection_grant: Any) -> None:
        # Before the first cancel: a grant rewritten, missing or for another run stops it all.
        ti = context["ti"]
        try:
            why = authorize(
                ids,
                key=lambda: grant_key(self.dropbox_sign_conn_id),
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                policy=CancellationPolicy.from_config(),
                selection_grant=selection_grant,
                approval_grant=self.approval_grant,
                require_selection=self.require_selection,
                require_approval=dry_run_flag(self.require_approval_setting, "require_approval"),
                # A mapped instance got its ids from an upstream task's XCom, whatever the file says.
                named_at_run_time=self.ids_named_at_run_time or ti.map_index not in (None, -1),
            )
        except (GrantError, ValueError) as refused:
            raise AirflowFailException(f"Nothing was cancelled: {refused}") from None
        if self.require_selection or given_grant(selection_grant) is not None:
            from airflow.sdk import Variable

            # The deployment's kill switch: stops a selection already made, at once.
            if str(Variable.get(DISARM_VARIABLE, default="")).strip().lower() == "false":
                raise AirflowFailException(
                    f"Nothing was cancelled: the Variable {DISARM_VARIABLE} is false (disarmed)"
                )
            # A selection by rule (a list step's) that no person approves is cancelled only where
            # the deployment armed it. (authorize verified the grant: its fields are the list step's.)
            unattended = search_of([selection_grant]) is not None and not selection_grant["require_approval"]
            if unattended and not CancellationPolicy.from_config().armed:
                raise AirflowFailException(
                    "Nothing was cancelled: a list step's selection, and [dropbox_sign] armed is False"
                )
        self.log.info("Cancelling %d signature requests: %s", len(ids), why)

    def _cancel(self, hook: DropboxSignHook, sr_id: str) -> tuple[str, str | None]:
        """One id's outcome, and Dropbox Sign's reason when it refused the cancel."""
        try:
            hook.cancel_signature_request(sr_id)
        except DropboxSignError as refused:
            if refused.state is RequestState.CANCEL_REQUESTED:
                return str(Outcome.CANCEL_REQUESTED), None  # 409: an identical cancel is in flight
            if refused.retryable:
                raise  # the hook's retries are spent: report it rather than guess
            return self._decide_by_get(hook, sr_id, refused)
        return str(Outcome.CANCEL_REQUESTED), None

    def _decide_by_get(
        self, hook: DropboxSignHook, sr_id: str, refused: DropboxSignError
    ) -> tuple[str, str | None]:
        state = _state_by_get(hook, sr_id)
        told = refused.state
        if state is RequestState.PENDING and told in (RequestState.FORBIDDEN, RequestState.UNAUTHORIZED):
            # Reading is not cancelling: a team admin may GET a member's request but not cancel it.
            state = told
        outcome = Outcome.of_state(state)
        if outcome is not None:
            return str(outcome), None
        if (
            state is RequestState.PENDING
            and refused.status_code is not None
            and 400 <= refused.status_code < 500
        ):
            # Dropbox Sign answered, and refused to cancel a request that is still open (not its
            # sender's, say): a verdict, with its reason; sending it again would be refused again.
            return str(Outcome.REFUSED), f"{refused.error_name}: {refused.error_msg}"
        raise refused  # no verdict: the refusal itself is the news

    def _preview(
        self, hook: DropboxSignHook, ids: list[str], context: Context, known: dict[str, Any]
    ) -> dict[str, str]:
        outcomes: dict[str, str] = {}
        previews: list[RequestPreview] = []
        for sr_id in ids:
            if sr_id in known:
                # A list step's summary already holds what a read would tell: no request per id.
                previews.append(known[sr_id])
                outcomes[sr_id] = str(known[sr_id]["outcome"])
                continue
            request: dict[str, Any] | None = None
            try:
                try:
                    request = hook.get_signature_request(sr_id)
                    state = request_state(request)
                except DropboxSignError as refused:
                    state = request_state(refused)  # raises it again when it tells no state
            except DropboxSignError as error:
                outcomes[sr_id] = f"error: {error}"
            else:
                outcome = Outcome.WOULD_CANCEL if state is RequestState.PENDING else Outcome.of_state(state)
                outcomes[sr_id] = state.value if outcome is None else str(outcome)
            previews.append(request_preview(sr_id, outcomes[sr_id], request))
        # What a person approving the cancel reads: the title, signers and date of each request;
        # signed, so that the form shows what was read and an approval covers what it showed.
        ti = context["ti"]
        ti.xcom_push(key=PREVIEW_XCOM_KEY, value=previews)
        # Signed only what this task read itself: summaries handed in are shown, never vouched for.
        if not known:
            named_at_run_time = self.ids_named_at_run_time or ti.map_index not in (None, -1)
            selection = mint(
                grant_key(self.dropbox_sign_conn_id),
                kind=SELECTION,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                ids=would_cancel(previews),
                shown=previews,
                # Ids named at run time need the Approve the deployment or this task asks for.
                require_approval=dry_run_flag(self.require_approval_setting, "require_approval")
                or (CancellationPolicy.from_config().require_approval and named_at_run_time),
            )
            ti.xcom_push(key=SELECTION_XCOM_KEY, value=selection)
        log_outcomes(self.log, "Dry run, nothing was cancelled", outcomes, summarize(outcomes, {}))
        return outcomes

    def _wait(
        self, hook: DropboxSignHook, outcomes: dict[str, str], errors: dict[str, str], context: Context
    ) -> dict[str, str]:
        # The cancels were sent just now, by this task: every queued id may be cancelled again, and
        # reading them before a poll interval has passed would tell nothing.
        settings = self.wait_settings
        wait = ConfirmationWait.start(settings, outcomes, self.log, poll_at_once=False, errors=errors)
        if self.deferrable and not wait.watch.done:
            defer_until_confirmed(self, wait.watch, self.dropbox_sign_conn_id, settings)
        wakeups = Wakeups(self.dropbox_sign_conn_id, enabled=settings.event_first)
        while not wait.watch.done:
            time.sleep(min(wait.seconds_to_poll(time.time()), wakeups.check_interval))
            run_step(hook, wait, wakeups.check(wait.watch.pending, self.log), self.log)
        return self.execute_complete(context, wait.watch.event(self.wait_settings.on_completed))

    def execute_complete(self, context: Context, event: CancellationEvent) -> dict[str, str]:
        """Turn the trigger's event into the task's result, or a failure listing each failing id."""
        return self._conclude(self._judged(event, context), context)

    def _conclude(self, event: CancellationEvent, context: Context) -> dict[str, str]:
        """End the task with its report: the outcomes, or a failure listing each failing id."""
        # Ids that got no verdict may get one on a task retry, which is safe: what an earlier try
        # had accepted is recorded, and not sent again.
        retryable = Outcome.ERROR in event["outcomes"].values()
        if event["status"] == "success" or not will_retry(context["ti"], retryable):
            AcceptedCancels.forget(context["ti"], self.log)
        return finish(event, self.log, retryable=retryable)


def _state_by_get(hook: DropboxSignHook, sr_id: str) -> RequestState:
    try:
        return request_state(hook.get_signature_request(sr_id))
    except DropboxSignError as error:
        return request_state(error)


def _summaries(value: Any) -> dict[str, Any]:
    # Summaries handed in as plain values (not a selection): shown by a dry run instead of a read.
    if not isinstance(value, list):
        return {}
    return {
        item["signature_request_id"]: dict(item)
        for item in value
        if isinstance(item, Mapping) and "signature_request_id" in item and "outcome" in item
    }
