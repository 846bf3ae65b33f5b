"""
Waiting for cancellations to be confirmed: the bookkeeping shared by the operator's wait, the
sensor's poke and the trigger.

Its whole state is plain JSON with absolute Unix times, so a trigger rebuilt after a triggerer
restart keeps its deadline and the clock of each id's last known cancel: no 60-minute clock starts
anew. Airflow rebuilds a trigger from the kwargs it was deferred with, so re-cancels made after the
deferral are not known to the rebuilt trigger: an id may be cancelled again sooner than
``recancel_after``, which is harmless (a cancel is idempotent) and never happens past the deadline.

The words *answer*, *outcome*, *verdict*, *watch* and *settle* are defined in
:mod:`dropbox_sign_provider.outcomes`; this module holds the watch and the poll loops only.

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
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from dropbox_sign_provider.exceptions import DropboxSignError
from dropbox_sign_provider.ids import validate_signature_request_id
from dropbox_sign_provider.outcomes import CancellationEvent, Logger, Outcome, report
from dropbox_sign_provider.state import RequestState, request_state
from dropbox_sign_provider.wait_settings import (
    DEFAULT_MAX_CANCEL_ATTEMPTS,
    DEFAULT_RECANCEL_AFTER,
    check_wait_settings,
)

if TYPE_CHECKING:
    from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
    from dropbox_sign_provider.wakeups import Wakeups


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
        :param state: its state, from :func:`~dropbox_sign_provider.state.request_state`.
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


#: What one poll round asks to send: ``("get" | "cancel", id, deadline of the call)``.
Call = tuple[Literal["get", "cancel"], str, float | None]
#: What a call answered: the request object of a ``GET``, ``None`` for an accepted cancel, or the
#: error it raised.
Answer = dict[str, Any] | DropboxSignError | None


def _round(
    watch: CancellationWatch, log: Logger, cutoff: float | None, ids: Iterable[str] | None
) -> Generator[Call, Answer, None]:
    # The rules of one round, free of I/O: the sync and the async loop differ only in how they send.
    for sr_id in list(watch.pending if ids is None else ids):
        if cutoff is not None and time.time() >= cutoff:
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


def poll_once(
    hook: DropboxSignHook,
    watch: CancellationWatch,
    log: Logger,
    cutoff: float | None = None,
    ids: Iterable[str] | None = None,
) -> None:
    """
    One round over the pending ids with the sync hook: ``GET`` each, re-cancel those due.

    :param hook: the hook to send with.
    :param watch: the wait; updated in place.
    :param log: the task's logger.
    :param cutoff: Unix time after which the round sends nothing more (``None``: no cutoff).
    :param ids: only these ids (those an event named), skipping any already settled; ``None``
        for every pending id.
    """
    round_ = _round(watch, log, cutoff, ids)
    call = _next(round_, None)
    while call is not None:
        kind, sr_id, deadline = call
        answer: Answer
        try:
            send = hook.get_signature_request if kind == "get" else hook.cancel_signature_request
            answer = send(sr_id, deadline=deadline)
        except DropboxSignError as error:
            answer = error
        call = _next(round_, answer)


async def apoll_once(
    hook: DropboxSignAsyncHook,
    watch: CancellationWatch,
    log: Logger,
    cutoff: float | None = None,
    ids: Iterable[str] | None = None,
) -> None:
    """Async :func:`poll_once`, for the trigger: the same round, sent with the async hook."""
    round_ = _round(watch, log, cutoff, ids)
    call = _next(round_, None)
    while call is not None:
        kind, sr_id, deadline = call
        asend = hook.get_signature_request if kind == "get" else hook.cancel_signature_request
        try:
            answer: Answer = await asend(sr_id, deadline=deadline)
        except DropboxSignError as error:
            answer = error
        call = _next(round_, answer)


def poll_due(
    hook: DropboxSignHook,
    watch: CancellationWatch,
    log: Logger,
    poll_interval: float,
    next_poll: float,
    wakeups: Wakeups | None = None,
) -> float:
    """
    One step of a sync wait: read at once the ids an event woke, then poll every pending id when
    the poll interval is up. The trigger takes the same steps, sent with the async hook.

    :param hook: the hook to send with.
    :param watch: the wait; updated in place.
    :param log: the task's logger.
    :param poll_interval: seconds between polls of every pending id.
    :param next_poll: Unix time when every pending id is next polled (and at the deadline at the
        latest).
    :param wakeups: the board reader of an event-first wait; ``None`` to poll only.
    :return: when every pending id is next polled.
    """
    cutoff = round_cutoff(watch, poll_interval)
    woken = wakeups.check(watch.pending, log) if wakeups is not None else []
    if woken:
        poll_once(hook, watch, log, cutoff, woken)
    if time.time() < min(next_poll, watch.deadline) or watch.done:
        return next_poll
    # Every pending id is read once more at the deadline, so none ends as timeout unread.
    poll_once(hook, watch, log, cutoff)
    return time.time() + poll_interval


def _next(round_: Generator[Call, Answer, None], answer: Answer) -> Call | None:
    # The round's next call, given the last one's answer; None once the round is over.
    try:
        return round_.send(answer)
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
