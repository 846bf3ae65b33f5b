"""
Waiting for cancellations to be confirmed: the watch and the wait's one step, driven by the
operator's wait, the sensor's pokes and the trigger alike.

Its whole state is plain JSON with absolute Unix times, so a trigger rebuilt after a triggerer
restart keeps its deadline and the clock of each id's last known cancel: no 60-minute clock starts
anew. Airflow rebuilds a trigger from the kwargs it was deferred with, so re-cancels made after the
deferral are not known to the rebuilt trigger: an id may be cancelled again sooner than
``recancel_after``, which is harmless (a cancel is idempotent) and never happens past the deadline.

The words *answer*, *outcome*, *verdict*, *watch* and *settle* are defined in
:mod:`dropbox_sign_provider.cancellation.outcomes`; this module holds the watch and the one step
that every kind of waiting drives.

Only ids whose cancel this task sent, or was told was sent (the operator's ``cancel_requested``
outcomes), may be re-cancelled; ids the watch was only asked to watch never are. No call goes out
past the deadline: a re-cancel is sent with the watch's deadline, a ``GET`` with its round's cutoff,
and the hooks refuse to send (``DropboxSignDeadlineError``) rather than wait past it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from dropbox_sign_provider.cancellation.ids import validate_signature_request_id
from dropbox_sign_provider.cancellation.outcomes import CancellationEvent, Logger, Outcome, report
from dropbox_sign_provider.cancellation.state import RequestState, request_state
from dropbox_sign_provider.cancellation.wait_settings import (
    DEFAULT_MAX_CANCEL_ATTEMPTS,
    DEFAULT_RECANCEL_AFTER,
    WaitSettings,
    check_wait_settings,
)
from dropbox_sign_provider.exceptions import DropboxSignError


class Action(str, enum.Enum):
    """What to do next for one id."""

    DONE = "done"
    WAIT = "wait"
    RECANCEL = "recancel"


class PendingCancel(TypedDict):
    """
    A cancellation waiting for confirmation.

    :ivar last_cancel_at: when the last cancel was sent (or the wait started, for a watched id).
    :ivar cancel_attempts: cancels sent so far (0 for an id that is only watched).
    :ivar may_recancel: whether this wait may cancel the id again; false for ids it was only asked
        to watch, and for state stored before the field existed: a cancel is irreversible, so what
        nobody asked for is never sent.
    """

    last_cancel_at: float
    cancel_attempts: int
    may_recancel: bool


@dataclass
class CancellationWatch:
    """
    The confirmation state of a set of cancellations.

    :param pending: id -> when its last cancel was sent, how many were sent and whether this wait
        may cancel it again.
    :param outcomes: id -> outcome for every id, in the order given; ``cancel_requested`` while
        pending.
    :param deadline: Unix time after which ids still pending end as ``timeout``; no call is sent
        after it.
    :param recancel_after: seconds after a cancel with no confirmation before cancelling again.
    :param max_cancel_attempts: cancels sent per id at most; one more due ends it as ``timeout``.
    :param errors: id -> what the API answered, for ids that ended ``error``.
    """

    pending: dict[str, PendingCancel]
    outcomes: dict[str, str]
    deadline: float
    recancel_after: float = DEFAULT_RECANCEL_AFTER
    max_cancel_attempts: int = DEFAULT_MAX_CANCEL_ATTEMPTS
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        outcomes: dict[str, str],
        now: float,
        timeout: float,
        recancel_after: float = DEFAULT_RECANCEL_AFTER,
        max_cancel_attempts: int = DEFAULT_MAX_CANCEL_ATTEMPTS,
        *,
        may_recancel: bool = True,
        errors: dict[str, str] | None = None,
    ) -> CancellationWatch:
        """
        Start watching: ids whose outcome is ``cancel_requested`` wait, the others are settled.

        :param outcomes: id -> outcome, as the cancel calls (or the caller) reported them.
        :param now: the current Unix time; the 60-minute clock starts now, the cancel having been
            sent just before.
        :param timeout: seconds from ``now`` to the deadline.
        :param recancel_after: seconds after a cancel with no confirmation before cancelling again.
        :param max_cancel_attempts: cancels per id at most, counting the first one.
        :param may_recancel: whether the waiting ids may be cancelled again: true when their cancel
            was sent by this task or reported sent, false for ids that are only to be watched.
        :param errors: id -> message for ids already ``error``, so the final report names why.
        """
        pending = {
            sr_id: PendingCancel(
                last_cancel_at=now, cancel_attempts=1 if may_recancel else 0, may_recancel=may_recancel
            )
            for sr_id, outcome in outcomes.items()
            if outcome == Outcome.CANCEL_REQUESTED
        }
        return cls(
            pending, dict(outcomes), now + timeout, recancel_after, max_cancel_attempts, dict(errors or {})
        )

    @property
    def done(self) -> bool:
        """Whether every id is settled."""
        return not self.pending

    def observe(self, signature_request_id: str, state: RequestState, now: float) -> Action:
        """
        Take in what the API said of a pending id and say what to do next.

        :param signature_request_id: a pending id.
        :param state: its state, from :func:`~dropbox_sign_provider.cancellation.state.request_state`.
        :param now: the current Unix time.
        """
        if state.is_final:
            self.settle(signature_request_id, state.value)
            return Action.DONE
        pending = self.pending[signature_request_id]
        if (
            state is RequestState.TRANSIENT
            or not pending["may_recancel"]
            or now - pending["last_cancel_at"] < self.recancel_after
        ):
            return Action.WAIT
        if pending["cancel_attempts"] >= self.max_cancel_attempts or now >= self.deadline:
            self.settle(signature_request_id, str(Outcome.TIMEOUT))
            return Action.DONE
        return Action.RECANCEL

    def recanceled(self, signature_request_id: str, error: DropboxSignError | None, now: float) -> None:
        """
        Record the answer to a re-cancel of a pending id.

        An answered call counts as an attempt and restarts the id's clock; what it did is read on
        the next poll, from ``GET``. A re-cancel that got no verdict (429, 5xx, no answer, or not
        sent because the deadline came first) counts for nothing and stays due.
        """
        if error is not None and _no_verdict(error):
            return
        pending = self.pending[signature_request_id]
        pending["last_cancel_at"] = now
        pending["cancel_attempts"] += 1

    def settle(self, signature_request_id: str, outcome: str) -> None:
        """Give a pending id its final outcome."""
        self.pending.pop(signature_request_id, None)
        self.outcomes[signature_request_id] = outcome

    def fail(self, signature_request_id: str, error: DropboxSignError) -> None:
        """Settle a pending id as ``error``: the API answered something that tells no state."""
        self.errors[signature_request_id] = str(error)
        self.settle(signature_request_id, str(Outcome.ERROR))

    def expire(self, now: float) -> bool:
        """Past the deadline, settle every pending id as ``timeout``; return whether it did."""
        if now < self.deadline or not self.pending:
            return False
        for signature_request_id in list(self.pending):
            self.settle(signature_request_id, str(Outcome.TIMEOUT))
        return True

    def next_recancel_at(self) -> float:
        """When the earliest re-cancel falls due (the deadline when none is pending or allowed)."""
        due = [p["last_cancel_at"] + self.recancel_after for p in self.pending.values() if p["may_recancel"]]
        return min([*due, self.deadline])

    def event(self, on_completed: str) -> CancellationEvent:
        """The final report, judged with ``on_completed``."""
        return report(self.outcomes, on_completed, self.errors)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON state, for a trigger's kwargs."""
        return {
            "pending": {k: dict(v) for k, v in self.pending.items()},
            "outcomes": dict(self.outcomes),
            "deadline": self.deadline,
            "recancel_after": self.recancel_after,
            "max_cancel_attempts": self.max_cancel_attempts,
            "errors": dict(self.errors),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CancellationWatch:
        """
        Rebuild from :meth:`to_json`, checking every id and setting first.

        State stored before a field existed still loads: a pending id without ``may_recancel`` is
        only watched (never cancelled again), and no ``errors`` means none.

        :raises ValueError: naming a bad id or setting.
        """
        check_wait_settings(1.0, float("inf"), data["recancel_after"], data["max_cancel_attempts"])
        pending = {
            validate_signature_request_id(k): PendingCancel(
                last_cancel_at=float(v["last_cancel_at"]),
                cancel_attempts=int(v["cancel_attempts"]),
                may_recancel=_flag(k, v.get("may_recancel", False)),
            )
            for k, v in data["pending"].items()
        }
        outcomes = {validate_signature_request_id(k): str(v) for k, v in data["outcomes"].items()}
        errors = {validate_signature_request_id(k): str(v) for k, v in (data.get("errors") or {}).items()}
        return cls(
            pending,
            outcomes,
            float(data["deadline"]),
            float(data["recancel_after"]),
            int(data["max_cancel_attempts"]),
            errors,
        )


def _flag(signature_request_id: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(
            f"may_recancel {value!r} of signature request {signature_request_id} must be true or false"
        )
    return value


def _no_verdict(error: DropboxSignError) -> bool:
    try:
        return request_state(error) is RequestState.TRANSIENT
    except DropboxSignError:
        # A refusal that tells no state (a 400 for a request signed since the last poll, say) is
        # still an answer: the next GET says what became of the request.
        return False


def log_no_recancel(watch: CancellationWatch, timeout: float, log: Logger) -> None:
    """
    Say once, at the start of a wait, when ``timeout`` leaves no room for a re-cancel: a short wait
    is a normal setting, but whoever reads the log should not expect the 60-minute rule to apply.

    :param watch: the wait just started.
    :param timeout: its length in seconds.
    :param log: the task's logger.
    """
    if not watch.done and timeout <= watch.recancel_after:
        log.info(
            "timeout %g s is not longer than recancel_after %g s: no re-cancel can happen within this "
            "timeout; ids not confirmed by then end as timeout",
            timeout,
            watch.recancel_after,
        )


def round_cutoff(watch: CancellationWatch, poll_interval: float) -> float:
    """
    When a poll round must stop: one poll interval past the deadline (or past its own start, for a
    trigger rebuilt after the deadline), inside Airflow's backstop of 2 poll intervals + 60 s. A
    round paced by the rate limit would otherwise outlast that backstop and lose every outcome.
    """
    return max(time.time(), watch.deadline) + poll_interval


#: What one step asks to send: ``("get" | "cancel", id, deadline of the call)``.
Call = tuple[Literal["get", "cancel"], str, float | None]
#: What a call answered: the request object of a ``GET``, ``None`` for an accepted cancel, or the
#: error it raised.
Answer = dict[str, Any] | DropboxSignError | None


@dataclass(slots=True)
class ConfirmationWait:
    """
    One wait for confirmation, as each kind of waiting drives it: the operator's loop, the sensor's
    pokes and the trigger's coroutine. Each driver waits in its own way, learns which ids an event
    woke, and runs :meth:`step` with :func:`run_step` (sync) or :func:`arun_step` (async); the step
    decides what to read and when to look again.

    :param watch: the cancellations waited for; updated in place.
    :param poll_interval: seconds between reads of every pending id.
    :param next_poll: Unix time when every pending id is next read (at the deadline at the latest).
    """

    watch: CancellationWatch
    poll_interval: float
    next_poll: float

    @classmethod
    def start(
        cls,
        settings: WaitSettings,
        outcomes: dict[str, str],
        log: Logger,
        *,
        poll_at_once: bool,
        may_recancel: bool = True,
        errors: dict[str, str] | None = None,
    ) -> ConfirmationWait:
        """
        Start a task's wait: ids whose outcome is ``cancel_requested`` wait, the others are settled.

        :param settings: the task's wait settings.
        :param outcomes: id -> outcome, as the cancel calls (or the caller) reported them.
        :param log: the task's logger.
        :param poll_at_once: read every pending id at the first step; otherwise a poll interval
            from now, when the cancels were just sent and reading them at once would tell nothing.
        :param may_recancel: see :meth:`CancellationWatch.start`.
        :param errors: id -> message for ids already ``error``.
        """
        now = time.time()
        watch = CancellationWatch.start(
            outcomes,
            now,
            settings.timeout,
            settings.recancel_after,
            settings.max_cancel_attempts,
            may_recancel=may_recancel,
            errors=errors,
        )
        log_no_recancel(watch, settings.timeout, log)
        return cls(watch, settings.poll_interval, now if poll_at_once else now + settings.poll_interval)

    @property
    def poll_due_at(self) -> float:
        """When every pending id is read next: the next poll, or the deadline if that comes first."""
        return min(self.next_poll, self.watch.deadline)

    def seconds_to_poll(self, now: float) -> float:
        """Seconds from ``now`` until every pending id is read next (0 when it is due)."""
        return max(0.0, self.poll_due_at - now)

    def step(self, woken: Iterable[str], log: Logger) -> Generator[Call, Answer, None]:
        """
        One step, free of I/O: read at once the ids an event woke, then every pending id when the
        poll interval is up. Every pending id is read once more at the deadline, so none ends as
        ``timeout`` unread.

        :param woken: the pending ids an event named since the last step.
        :param log: the task's or trigger's logger.
        """
        cutoff = round_cutoff(self.watch, self.poll_interval)
        woken = list(woken)
        if woken:
            yield from _round(self.watch, log, cutoff, woken)
        if self.watch.done or time.time() < self.poll_due_at:
            return
        yield from _round(self.watch, log, cutoff, None)
        self.next_poll = time.time() + self.poll_interval


def _round(
    watch: CancellationWatch, log: Logger, cutoff: float, ids: Iterable[str] | None
) -> Generator[Call, Answer, None]:
    # One read of the given ids (every pending id for None), re-cancelling those due.
    for sr_id in list(watch.pending if ids is None else ids):
        if time.time() >= cutoff:
            break
        if sr_id not in watch.pending:  # an event woke an id the last round settled
            continue
        # A trigger never waits for the budget past its own deadline: the GET is bounded by the
        # round's cutoff, the re-cancel by the watch's deadline (a cancel then would be reported
        # as timeout although the server had just accepted it).
        answer = yield ("get", sr_id, cutoff)
        if _observe(watch, sr_id, answer, log) is Action.RECANCEL:
            recancel = yield ("cancel", sr_id, watch.deadline)
            error = recancel if isinstance(recancel, DropboxSignError) else None
            watch.recanceled(sr_id, error, time.time())
    watch.expire(time.time())


class Sender(Protocol):
    """What a sync wait sends with: :class:`~dropbox_sign_provider.hooks.dropbox_sign.DropboxSignHook`."""

    def get_signature_request(
        self, signature_request_id: str, *, deadline: float | None = None
    ) -> dict[str, Any]:
        """``GET`` one request."""
        ...

    def cancel_signature_request(self, signature_request_id: str, *, deadline: float | None = None) -> None:
        """Cancel one request."""
        ...


class AsyncSender(Protocol):
    """
    What the trigger sends with: :class:`~dropbox_sign_provider.hooks.dropbox_sign.DropboxSignAsyncHook`.
    """

    async def get_signature_request(
        self, signature_request_id: str, *, deadline: float | None = None
    ) -> dict[str, Any]:
        """``GET`` one request."""
        ...

    async def cancel_signature_request(
        self, signature_request_id: str, *, deadline: float | None = None
    ) -> None:
        """Cancel one request."""
        ...


def run_step(hook: Sender, wait: ConfirmationWait, woken: Iterable[str], log: Logger) -> None:
    """
    Run one :meth:`ConfirmationWait.step`, sending its calls with the sync hook.

    :param hook: the hook to send with.
    :param wait: the wait; updated in place.
    :param woken: the pending ids an event named since the last step.
    :param log: the task's logger.
    """
    steps = wait.step(woken, log)
    call = _next(steps, None)
    while call is not None:
        kind, sr_id, deadline = call
        send = hook.get_signature_request if kind == "get" else hook.cancel_signature_request
        answer: Answer
        try:
            answer = send(sr_id, deadline=deadline)
        except DropboxSignError as error:
            answer = error
        call = _next(steps, answer)


async def arun_step(hook: AsyncSender, wait: ConfirmationWait, woken: Iterable[str], log: Logger) -> None:
    """:func:`run_step` for the trigger: the same step, its calls sent with the async hook."""
    steps = wait.step(woken, log)
    call = _next(steps, None)
    while call is not None:
        kind, sr_id, deadline = call
        asend = hook.get_signature_request if kind == "get" else hook.cancel_signature_request
        try:
            answer: Answer = await asend(sr_id, deadline=deadline)
        except DropboxSignError as error:
            answer = error
        call = _next(steps, answer)


def _next(steps: Generator[Call, Answer, None], answer: Answer) -> Call | None:
    # The step's next call, given the last one's answer; None once the step is over.
    try:
        return steps.send(answer)
    except StopIteration:
        return None


def _observe(watch: CancellationWatch, sr_id: str, answer: Answer, log: Logger) -> Action:
    try:
        state = request_state(answer)
    except DropboxSignError as error:
        # An answer that tells no state (400, 402, ...) is this id's problem, not the others':
        # it ends as error, named with what the API said, and the round goes on.
        watch.fail(sr_id, error)
        log.warning("Signature request %s: %s; not waiting for it any longer", sr_id, error)
        return Action.DONE
    action = watch.observe(sr_id, state, time.time())
    if state is RequestState.TRANSIENT:
        log.warning("Signature request %s: no verdict this time (%s); will ask again", sr_id, answer)
    elif action is Action.RECANCEL:
        attempts = watch.pending[sr_id]["cancel_attempts"]
        log.warning(
            "Signature request %s: cancellation not confirmed %.0f s after cancel #%d; cancelling again",
            sr_id,
            watch.recancel_after,
            attempts,
        )
    elif action is Action.DONE:
        # The final report counts the outcomes: one INFO line per id would flood a large batch.
        log.debug("Signature request %s: %s", sr_id, watch.outcomes[sr_id])
    return action
