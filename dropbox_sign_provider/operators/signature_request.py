"""Operator that cancels Dropbox Sign signature requests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, conf
from airflow.sdk import BaseOperator

from dropbox_sign_provider import DEFAULT_CONN_NAME, wait_settings
from dropbox_sign_provider.confirmation import CancellationWatch, log_no_recancel, poll_once, round_cutoff
from dropbox_sign_provider.exceptions import DropboxSignError
from dropbox_sign_provider.ids import normalize_signature_request_ids
from dropbox_sign_provider.links import DropboxSignRequestLink, details_url
from dropbox_sign_provider.outcomes import (
    CancellationEvent,
    Outcome,
    finish,
    outcome_table,
    report,
    summarize,
)
from dropbox_sign_provider.state import RequestState, request_state
from dropbox_sign_provider.triggers.signature_request import defer_until_confirmed

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook


class CancelSignatureRequestOperator(BaseOperator):
    """
    Cancel one or many Dropbox Sign signature requests; idempotent and safe to retry.

    For each id the cancel call is sent; when Dropbox Sign refuses it (a 4xx other than 429), one
    ``GET`` decides what happened instead of guessing from the message: ``already_canceled``
    (410), ``completed``, ``declined``, ``not_found`` (404), ``forbidden`` (403) or
    ``unauthorized`` (401). A 409 (an
    identical request in flight) counts as ``cancel_requested``. Every id is processed even when
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
        duplicates are dropped, order is kept.
    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection.
    :param on_completed: ``fail`` (default) or ``ignore`` for requests that were signed or declined
        before they could be cancelled.
    :param max_cancellations: fail before cancelling anything when given more ids than this.
    :param dry_run: ``GET`` each id and report what would happen; cancel nothing.
    :param wait_for_confirmation: finish only once every cancellation is confirmed.
    :param deferrable: wait for confirmation on the triggerer.
    :param poke_interval: seconds between polls while waiting.
    :param timeout: seconds to wait for confirmation before ids end as ``timeout``; shorter than
        ``recancel_after`` is fine (the log then says no re-cancel can happen).
    :param recancel_after: seconds after a cancel without confirmation before cancelling again.
    :param max_cancel_attempts: cancels per id at most, counting the first one.
    """

    template_fields: Sequence[str] = ("signature_request_ids",)
    operator_extra_links = (DropboxSignRequestLink(),)
    ui_color = "#fde8e8"

    def __init__(
        self,
        *,
        signature_request_ids: Any,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        on_completed: str = "fail",
        max_cancellations: int | None = None,
        dry_run: bool = False,
        wait_for_confirmation: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = wait_settings.DEFAULT_POLL_INTERVAL,
        timeout: float = wait_settings.DEFAULT_TIMEOUT,
        recancel_after: float = wait_settings.DEFAULT_RECANCEL_AFTER,
        max_cancel_attempts: int = wait_settings.DEFAULT_MAX_CANCEL_ATTEMPTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        wait_settings.check_on_completed(on_completed)
        wait_settings.check_wait_settings(poke_interval, timeout, recancel_after, max_cancel_attempts)
        if max_cancellations is not None and (
            isinstance(max_cancellations, bool)
            or not isinstance(max_cancellations, int)
            or max_cancellations < 0
        ):
            raise ValueError(
                f"max_cancellations {max_cancellations!r} must be a non-negative integer or None"
            )
        if _is_literal(signature_request_ids):
            normalize_signature_request_ids(signature_request_ids)  # fail at parse time when we can
        self.signature_request_ids = signature_request_ids
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.on_completed = on_completed
        self.max_cancellations = max_cancellations
        # BaseOperator already has a dry_run() method.
        self.is_dry_run = dry_run
        self.wait_for_confirmation = wait_for_confirmation
        self.deferrable = deferrable
        self.poke_interval = poke_interval
        self.timeout = timeout
        self.recancel_after = recancel_after
        self.max_cancel_attempts = max_cancel_attempts

    def execute(self, context: Context) -> dict[str, str]:
        """Validate every id, apply the cap, then cancel (or preview) each one."""
        ids = normalize_signature_request_ids(self.signature_request_ids)
        if self.max_cancellations is not None and len(ids) > self.max_cancellations:
            raise AirflowFailException(
                f"Refusing to cancel {len(ids)} signature requests: more than max_cancellations="
                f"{self.max_cancellations}. Nothing was cancelled. Check the ids, or raise the cap."
            )
        # The link is read for every task instance; an empty one shows no button.
        link = details_url(ids[0]) if len(ids) == 1 else ""
        context["ti"].xcom_push(key=DropboxSignRequestLink().xcom_key, value=link)
        # Imported here, not at the top: every DAG file that uses the operator imports this module,
        # and the HTTP clients behind the hook are needed only to run it.
        from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

        hook = DropboxSignHook(self.dropbox_sign_conn_id)
        if self.is_dry_run:
            return self._preview(hook, ids)

        outcomes: dict[str, str] = {}
        errors: dict[str, str] = {}
        for sr_id in ids:
            try:
                outcomes[sr_id] = self._cancel(hook, sr_id)
            except DropboxSignError as error:
                outcomes[sr_id], errors[sr_id] = str(Outcome.ERROR), str(error)
                self.log.warning("Signature request %s: no verdict: %s", sr_id, error)
            else:
                self.log.info("Signature request %s: %s", sr_id, outcomes[sr_id])

        judged = report(outcomes, self.on_completed, errors)
        failures = judged["failures"]
        queued = Outcome.CANCEL_REQUESTED in outcomes.values()
        if failures:
            # Keep the partial result where a summary task or a person can read it.
            context["ti"].xcom_push(key="outcomes", value=outcomes)
        # With cancellations queued and a wait asked for, the failures are reported after the wait:
        # failing now would leave the queued ones unconfirmed and never re-cancelled.
        if failures and not (self.wait_for_confirmation and queued):
            finish(
                judged,
                self.log,
                # Ids that got no verdict may get one on a retry, which is safe: the ids already
                # cancelled come back as already_canceled or cancel_requested.
                retryable=bool(errors),
            )
        if not self.wait_for_confirmation:
            self.log.info(
                "Dropbox Sign cancellations: %s\n%s", summarize(outcomes, {}), outcome_table(outcomes)
            )
            return outcomes
        return self._wait(hook, outcomes, errors)

    def _cancel(self, hook: DropboxSignHook, sr_id: str) -> str:
        try:
            hook.cancel_signature_request(sr_id)
        except DropboxSignError as refused:
            if refused.state is RequestState.CANCEL_REQUESTED:
                return str(Outcome.CANCEL_REQUESTED)  # 409: an identical cancel is in flight
            if refused.retryable:
                raise  # the hook's retries are spent: report it rather than guess
            return self._decide_by_get(hook, sr_id, refused)
        return str(Outcome.CANCEL_REQUESTED)

    def _decide_by_get(self, hook: DropboxSignHook, sr_id: str, refused: DropboxSignError) -> str:
        state = _state_by_get(hook, sr_id)
        told = refused.state
        if state is RequestState.PENDING and told in (RequestState.FORBIDDEN, RequestState.UNAUTHORIZED):
            # Reading is not cancelling: a team admin may GET a member's request but not cancel it.
            state = told
        outcome = Outcome.of_state(state)
        if outcome is None:
            raise refused  # still pending (or no verdict): the refusal itself is the news
        return str(outcome)

    def _preview(self, hook: DropboxSignHook, ids: list[str]) -> dict[str, str]:
        outcomes: dict[str, str] = {}
        for sr_id in ids:
            try:
                state = _state_by_get(hook, sr_id)
            except DropboxSignError as error:
                outcomes[sr_id] = f"error: {error}"
            else:
                outcome = Outcome.WOULD_CANCEL if state is RequestState.PENDING else Outcome.of_state(state)
                outcomes[sr_id] = state.value if outcome is None else str(outcome)
        self.log.info(
            "Dry run, nothing was cancelled: %s\n%s", summarize(outcomes, {}), outcome_table(outcomes)
        )
        return outcomes

    def _wait(
        self, hook: DropboxSignHook, outcomes: dict[str, str], errors: dict[str, str]
    ) -> dict[str, str]:
        # The cancels were sent just now, by this task: every queued id may be cancelled again.
        watch = CancellationWatch.start(
            outcomes, time.time(), self.timeout, self.recancel_after, self.max_cancel_attempts, errors=errors
        )
        if watch.done:
            return finish(
                watch.event(self.on_completed), self.log, retryable=Outcome.ERROR in outcomes.values()
            )
        log_no_recancel(watch, self.timeout, self.log)
        if self.deferrable:
            defer_until_confirmed(
                self, watch, self.dropbox_sign_conn_id, self.poke_interval, self.on_completed
            )
        while True:
            time.sleep(min(self.poke_interval, max(0.0, watch.deadline - time.time())))
            poll_once(hook, watch, self.log, round_cutoff(watch, self.poke_interval))
            if watch.done:
                return finish(
                    watch.event(self.on_completed),
                    self.log,
                    retryable=Outcome.ERROR in watch.outcomes.values(),
                )

    def _finish(self, watch: CancellationWatch) -> dict[str, str]:
        return finish(
            watch.event(self.on_completed), self.log, retryable=Outcome.ERROR in watch.outcomes.values()
        )

    def execute_complete(self, context: Context, event: CancellationEvent) -> dict[str, str]:
        """Turn the trigger's event into the task's result, or a failure listing each failing id."""
        return finish(event, self.log, retryable=Outcome.ERROR in event["outcomes"].values())


def _state_by_get(hook: DropboxSignHook, sr_id: str) -> RequestState:
    try:
        return request_state(hook.get_signature_request(sr_id))
    except DropboxSignError as error:
        return request_state(error)


def _is_literal(value: Any) -> bool:
    # Templates and XComArgs are checked in execute(), once rendered.
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    return isinstance(value, list | tuple) and all(_is_literal(v) for v in value)
