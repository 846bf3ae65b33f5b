"""
Trigger that waits, on the triggerer, for signature request cancellations to be confirmed, and the
one way the operator and the sensor hand a wait over to it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.triggers.base import BaseTrigger, TriggerEvent

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation.wait_settings import (
    DEFAULT_MAX_CANCEL_ATTEMPTS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RECANCEL_AFTER,
    WaitSettings,
    check_on_completed,
)
from dropbox_sign_provider.cancellation.watch import (
    CancellationWatch,
    ConfirmationWait,
    PendingCancel,
    arun_step,
)
from dropbox_sign_provider.events.wakeups import subscribe

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator


class SignatureRequestCanceledTrigger(BaseTrigger):
    """
    Poll signature requests until each cancellation is confirmed (``GET`` answers 410 ``deleted``),
    cancelling again when Dropbox Sign's 60-minute rule says so, then fire one event.

    Every kwarg is plain JSON and every time is absolute (Unix seconds): since Airflow 3.2 trigger
    kwargs go through ``airflow.sdk.serde``, which refuses anything else, and a triggerer that
    restarts rebuilds the trigger from them, so it must resume with the same deadline and clocks.

    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection.
    :param pending: id -> ``{"last_cancel_at": unix time, "cancel_attempts": n, "may_recancel":
        bool}``, the ids still waiting for confirmation. An id without ``may_recancel`` (kwargs
        stored by an earlier version) is only watched, never cancelled again.
    :param deadline: Unix time after which ids still pending end as ``timeout``.
    :param outcomes: id -> outcome of every id (``cancel_requested`` while pending), in order.
    :param poll_interval: seconds between polls of the pending ids.
    :param recancel_after: seconds after a cancel without confirmation before cancelling again.
    :param max_cancel_attempts: cancels per id at most.
    :param on_completed: ``fail`` or ``ignore`` for requests signed or declined before the
        cancellation took effect; decides the event's ``status``.
    :param errors: id -> what the API answered, for ids that already ended ``error``.
    :param event_first: read each id at once when a Dropbox Sign event names it (see
        :mod:`dropbox_sign_provider.events.wakeups`), and poll every ``poll_interval`` only as the fallback.
    """

    def __init__(
        self,
        *,
        pending: dict[str, PendingCancel],
        deadline: float,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        outcomes: dict[str, str] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        recancel_after: float = DEFAULT_RECANCEL_AFTER,
        max_cancel_attempts: int = DEFAULT_MAX_CANCEL_ATTEMPTS,
        on_completed: str = "fail",
        errors: dict[str, str] | None = None,
        event_first: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(event_first, bool):
            raise ValueError(f"event_first {event_first!r} must be True or False")
        check_on_completed(on_completed)
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, int | float)
            or not poll_interval > 0
        ):
            raise ValueError(f"poll_interval {poll_interval!r} must be a positive number of seconds")
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.poll_interval = float(poll_interval)
        self.on_completed = on_completed
        self.event_first = event_first
        self.watch = CancellationWatch.from_json(
            {
                "pending": pending,
                "outcomes": outcomes or {},
                "deadline": deadline,
                "recancel_after": recancel_after,
                "max_cancel_attempts": max_cancel_attempts,
                "errors": errors or {},
            }
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the current state as plain JSON."""
        state = self.watch.to_json()
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dropbox_sign_conn_id": self.dropbox_sign_conn_id,
                "pending": state["pending"],
                "deadline": state["deadline"],
                "outcomes": state["outcomes"],
                "poll_interval": self.poll_interval,
                "recancel_after": state["recancel_after"],
                "max_cancel_attempts": state["max_cancel_attempts"],
                "on_completed": self.on_completed,
                "errors": state["errors"],
                "event_first": self.event_first,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """
        Poll until every id is settled or the deadline passes; yield exactly one event.

        An answer that tells no state (400, 402, ...) ends that id as ``error``, named in the
        event; the other ids go on. Anything that is not an answer of the API (a bug) raises, so it
        fails the task instead of hiding in an event.
        """
        # The trigger has its own deadline: waiting for the account's budget is never an error here,
        # and every call is given that deadline, so no wait outlasts it.
        watch = self.watch
        # Imported here: the operator and the sensor import this module to defer, in DAG files too.
        from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook
        from dropbox_sign_provider.hooks.policy import RetryPolicy

        # Polling only, every pending id is read at once (the trigger may be resuming after a
        # restart). Event-first, the cancel was just sent: the first poll waits an interval, and an
        # event, or that poll, says when it took effect.
        now = time.time()
        wait = ConfirmationWait(
            watch, self.poll_interval, now + self.poll_interval if self.event_first else now
        )
        async with (
            DropboxSignAsyncHook(
                self.dropbox_sign_conn_id, retry_policy=RetryPolicy(max_rate_limit_wait=None)
            ) as hook,
            subscribe(
                self.dropbox_sign_conn_id, watch.pending, self.log, event_first=self.event_first
            ) as events,
        ):
            while not watch.done:
                woken = await events.wait(wait.seconds_to_poll(time.time()))
                await arun_step(hook, wait, woken, self.log)
        event = watch.event(self.on_completed)
        self.log.info("Dropbox Sign cancellations: %s", event["message"])
        yield TriggerEvent(dict(event))


def deferral_timeout(watch: CancellationWatch, poll_interval: float) -> timedelta:
    """Airflow's own deferral timeout: a backstop after the trigger's deadline, never before it."""
    return timedelta(seconds=max(0.0, watch.deadline - time.time()) + 2 * poll_interval + 60)


def defer_until_confirmed(
    task: BaseOperator, watch: CancellationWatch, conn_id: str, settings: WaitSettings
) -> NoReturn:
    """
    Hand the wait over to the triggerer; the task resumes in its ``execute_complete``.

    :param task: the deferring operator or sensor.
    :param watch: the cancellations to wait for.
    :param conn_id: the ``dropbox_sign`` connection.
    :param settings: the task's wait settings.
    """
    task.defer(
        trigger=SignatureRequestCanceledTrigger(
            dropbox_sign_conn_id=conn_id,
            poll_interval=settings.poll_interval,
            on_completed=settings.on_completed,
            event_first=settings.event_first,
            **watch.to_json(),
        ),
        method_name="execute_complete",
        timeout=deferral_timeout(watch, settings.poll_interval),
    )
