"""Sensor that waits until signature request cancellations are confirmed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation import wait_settings
from dropbox_sign_provider.cancellation.ids import (
    normalize_signature_request_ids,
    reported_outcomes,
    resolved_at_run_time,
)
from dropbox_sign_provider.cancellation.outcomes import CancellationEvent, Outcome, finish
from dropbox_sign_provider.cancellation.watch import ConfirmationWait, run_step
from dropbox_sign_provider.events.wakeups import EVENT_CHECK_INTERVAL, Wakeups
from dropbox_sign_provider.triggers.signature_request import defer_until_confirmed

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook


def initial_outcomes(
    signature_request_ids: Any, recancel_plain_ids: bool = False
) -> tuple[dict[str, str], bool]:
    """
    What is known of the ids before waiting, and whether the waiting ones may be cancelled again.

    For the result of
    :class:`~dropbox_sign_provider.operators.signature_request.CancelSignatureRequestOperator` (a
    mapping id -> outcome, or the string a template renders it to): the outcome it reported, so
    only the ids it queued are waited on, and those may be re-cancelled: the operator cancelled
    them. For plain ids: ``cancel_requested``, re-cancelled only when ``recancel_plain_ids``, since
    nothing says anyone asked for their cancellation.

    :param signature_request_ids: the sensor's input, rendered.
    :param recancel_plain_ids: whether plain ids may be cancelled again.
    :raises ValueError: naming a bad id.
    """
    # A template renders the operator's mapping to a string: read its outcomes too, or a dry run's
    # would_cancel ids would be waited on.
    reported = reported_outcomes(signature_request_ids)
    if reported is not None:
        return reported, True
    ids = normalize_signature_request_ids(signature_request_ids)
    return dict.fromkeys(ids, str(Outcome.CANCEL_REQUESTED)), recancel_plain_ids


class SignatureRequestCanceledSensor(BaseSensorOperator):
    """
    Wait until Dropbox Sign confirms the cancellation of signature requests.

    A cancellation is confirmed when the request answers HTTP 410 ``deleted``. The sensor cancels
    only what it was asked to cancel: ids the operator's result marks ``cancel_requested`` are
    cancelled again when nothing is confirmed ``recancel_after`` seconds after the last cancel
    (Dropbox Sign says 60 minutes), at most ``max_cancel_attempts`` times in all and never after
    the deadline; plain ids are only watched, unless ``recancel_plain_ids``. In deferrable mode the
    waiting happens on the triggerer and survives its restarts; poke mode follows the same rules.

    Returns (XCom) a mapping id -> outcome: ``canceled``, ``already_canceled``, ``completed``,
    ``declined``; the task fails listing each id that ended ``not_found``, ``forbidden``,
    ``unauthorized``, ``timeout`` or ``error`` (an answer that tells no state, such as a 400,
    named with the API's message), or ``completed``/``declined`` when ``on_completed="fail"``.

    :param signature_request_ids: one id, a list of ids, or the result of
        :class:`~dropbox_sign_provider.operators.signature_request.CancelSignatureRequestOperator`
        (then only the ids it queued are waited on). Templated. Empty input (``[]``, ``""``,
        ``{}``, ...) waits for nothing and succeeds with ``{}``.
    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection.
    :param poke_interval: seconds (or a ``timedelta``) between polls. ``None`` (default): the
        deployment's ``[dropbox_sign] poke_interval``, read when the task runs.
    :param timeout: seconds (or a ``timedelta``) before ids still unconfirmed end as ``timeout``;
        shorter than ``recancel_after`` is fine (the log then says no re-cancel can happen).
    :param recancel_after: seconds (or a ``timedelta``) after a cancel without confirmation before
        cancelling again.
    :param max_cancel_attempts: cancels per id at most, counting the first one.
    :param recancel_plain_ids: also re-cancel plain ids (not the operator's result) under the
        60-minute rule, taking them as cancelled just before the sensor started. Off by default:
        a cancel is irreversible, and plain ids say nothing of who asked for it.
    :param on_completed: ``fail`` (default) or ``ignore`` for requests that were signed or declined
        before the cancellation took effect.
    :param deferrable: wait on the triggerer instead of occupying a worker slot.
    :param event_first: read an id at once when a Dropbox Sign event names it (the callback
        receiver records events; see the *Events and callbacks* page), polling every
        ``poke_interval`` only as the fallback, which can then be minutes. Only the API's 410
        confirms, never the event. In poke mode the events are checked every 2 s (one Variable
        read). ``None`` (default): the deployment's ``[dropbox_sign] event_first``, read when the
        task runs.
    """

    template_fields: Sequence[str] = ("signature_request_ids",)
    ui_color = "#e8f1fd"

    def __init__(
        self,
        *,
        signature_request_ids: Any,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        poke_interval: wait_settings.Duration | None = None,
        timeout: wait_settings.Duration = wait_settings.DEFAULT_TIMEOUT,
        recancel_after: wait_settings.Duration = wait_settings.DEFAULT_RECANCEL_AFTER,
        max_cancel_attempts: int = wait_settings.DEFAULT_MAX_CANCEL_ATTEMPTS,
        on_completed: str = "fail",
        recancel_plain_ids: bool = False,
        event_first: bool | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        if event_first is not None and not isinstance(event_first, bool):
            raise ValueError(f"event_first {event_first!r} must be True or False")
        # The deployment's defaults are read when the task runs (execute); literals are checked now.
        settings = wait_settings.WaitSettings.checked(
            wait_settings.DEFAULT_POLL_INTERVAL if poke_interval is None else poke_interval,
            timeout,
            recancel_after,
            max_cancel_attempts,
            on_completed,
            bool(event_first),
        )
        self._poke_interval_given = poke_interval is not None
        self._event_first_given = event_first is not None
        if not isinstance(recancel_plain_ids, bool):
            raise ValueError(f"recancel_plain_ids {recancel_plain_ids!r} must be True or False")
        # Literals fail when the DAG file is parsed; templates and XComs once rendered, in execute().
        if not resolved_at_run_time(signature_request_ids):
            initial_outcomes(signature_request_ids)
        super().__init__(poke_interval=_poke_every(settings, deferrable), timeout=settings.timeout, **kwargs)
        if self.mode == "reschedule":
            raise ValueError(
                f"{self.task_id}: mode 'reschedule' would restart the 60-minute re-cancel clock at every "
                "reschedule; use deferrable=True to free the worker while waiting"
            )
        self.signature_request_ids = signature_request_ids
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.wait_settings = settings
        self.recancel_plain_ids = recancel_plain_ids
        self.deferrable = deferrable
        self._wait: ConfirmationWait | None = None
        self._wakeups = Wakeups(dropbox_sign_conn_id, enabled=False)
        self._hook: DropboxSignHook | None = None

    def _start_wait(self) -> ConfirmationWait:
        outcomes, may_recancel = initial_outcomes(self.signature_request_ids, self.recancel_plain_ids)
        if not outcomes:
            self.log.info("No signature requests given: nothing to wait for")
        self._wakeups = Wakeups(self.dropbox_sign_conn_id, enabled=self.wait_settings.event_first)
        # Event-first, the first poll waits a poll interval: an event, or that poll, confirms.
        return ConfirmationWait.start(
            self.wait_settings,
            outcomes,
            self.log,
            poll_at_once=not self.wait_settings.event_first,
            may_recancel=may_recancel,
        )

    def execute(self, context: Context) -> Any:
        """Check the ids, then wait on the triggerer (deferrable) or poke."""
        self.wait_settings = wait_settings.configured(
            self.wait_settings,
            poke_interval_given=self._poke_interval_given,
            event_first_given=self._event_first_given,
        )
        self.poke_interval = _poke_every(self.wait_settings, self.deferrable)
        self._wait = wait = self._start_wait()
        # With nothing left to wait for, the first poke (which sends nothing) gives the verdict, so
        # the base class still applies soft_fail and never_fail to it.
        if self.deferrable and not wait.watch.done:
            defer_until_confirmed(self, wait.watch, self.dropbox_sign_conn_id, self.wait_settings)
        return super().execute(context)

    def poke(self, context: Context) -> PokeReturnValue:
        """One step of the wait (the same step as the operator's wait and the trigger's)."""
        if self._wait is None:
            self._wait = self._start_wait()
        if self._hook is None:  # one hook (and HTTP session) for every poke of this run
            # Imported here for the same reason as in the operator: DAG files import this module.
            from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

            self._hook = DropboxSignHook(self.dropbox_sign_conn_id)
        watch = self._wait.watch
        run_step(self._hook, self._wait, self._wakeups.check(watch.pending, self.log), self.log)
        if not watch.done:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(
            is_done=True, xcom_value=finish(watch.event(self.wait_settings.on_completed), self.log)
        )

    def execute_complete(self, context: Context, event: CancellationEvent) -> dict[str, str]:
        """Turn the trigger's event into the task's result, or a failure listing each failing id."""
        return finish(event, self.log)


def _poke_every(settings: wait_settings.WaitSettings, deferrable: bool) -> float:
    # Event-first in poke mode pokes often, to read the board; the API is polled every poll_interval.
    if settings.event_first and not deferrable:
        return min(settings.poll_interval, EVENT_CHECK_INTERVAL)
    return settings.poll_interval
