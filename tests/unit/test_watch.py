"""
The confirmation watch: its rules on an explicit clock, what it reports, and the wait settings it
starts from. Its poll rounds against the emulator are in tests/integration.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from dropbox_sign_provider.cancellation.outcomes import (
    CancellationEvent,
    Outcome,
    failure_reason,
    finish,
    outcome_table,
    summarize,
)
from dropbox_sign_provider.cancellation.state import RequestState
from dropbox_sign_provider.cancellation.wait_settings import (
    WaitSettings,
    check_on_completed,
    check_wait_settings,
)
from dropbox_sign_provider.cancellation.watch import (
    Action,
    CancellationWatch,
    ConfirmationWait,
    log_no_recancel,
)
from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignConnectionError,
    DropboxSignDeadlineError,
    DropboxSignDeletedError,
    DropboxSignRateLimitError,
    DropboxSignServerError,
)
from tests.helpers import Recorder

A, B, C = "a" * 40, "b" * 40, "c" * 40
T0 = 1_700_000_000.0


def watch_of(outcomes: dict[str, str], **kw: Any) -> CancellationWatch:
    kw.setdefault("timeout", 100.0)
    kw.setdefault("recancel_after", 10.0)
    kw.setdefault("max_cancel_attempts", 3)
    return CancellationWatch.start(outcomes, T0, **kw)


def test_start_waits_only_on_queued_ids_and_keeps_the_order() -> None:
    watch = watch_of({C: "cancel_requested", A: "completed", B: "cancel_requested"}, timeout=30.0)
    assert list(watch.pending) == [C, B]
    assert watch.pending[C] == {"last_cancel_at": T0, "cancel_attempts": 1, "may_recancel": True}
    assert list(watch.outcomes) == [C, A, B]
    assert watch.deadline == T0 + 30.0
    assert not watch.done
    assert watch_of({A: "already_canceled"}).done


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        (RequestState.CANCELED, "canceled"),
        (RequestState.COMPLETED, "completed"),
        (RequestState.DECLINED, "declined"),
        (RequestState.NOT_FOUND, "not_found"),
        (RequestState.FORBIDDEN, "forbidden"),
        (RequestState.UNAUTHORIZED, "unauthorized"),
    ],
)
def test_final_states_settle(state: RequestState, outcome: str) -> None:
    watch = watch_of({A: "cancel_requested", B: "cancel_requested"})
    assert watch.observe(A, state, T0 + 1) is Action.DONE
    assert watch.outcomes[A] == outcome
    assert list(watch.pending) == [B]


@pytest.mark.parametrize(
    "state", [RequestState.PENDING, RequestState.CANCEL_REQUESTED, RequestState.TRANSIENT]
)
def test_nothing_final_waits_until_recancel_after(state: RequestState) -> None:
    watch = watch_of({A: "cancel_requested"}, recancel_after=10.0)
    assert watch.observe(A, state, T0 + 9.99) is Action.WAIT
    assert watch.outcomes[A] == "cancel_requested"
    expected = Action.WAIT if state is RequestState.TRANSIENT else Action.RECANCEL
    # A poll with no verdict is no evidence that the cancellation was lost.
    assert watch.observe(A, state, T0 + 10.0) is expected


def test_recancel_counts_and_restarts_the_clock_then_timeout_after_max_attempts() -> None:
    watch = watch_of({A: "cancel_requested"}, recancel_after=10.0, max_cancel_attempts=2)
    assert watch.observe(A, RequestState.PENDING, T0 + 10.0) is Action.RECANCEL
    watch.recanceled(A, None, T0 + 10.5)
    assert watch.pending[A] == {"last_cancel_at": T0 + 10.5, "cancel_attempts": 2, "may_recancel": True}
    assert watch.observe(A, RequestState.PENDING, T0 + 20.0) is Action.WAIT
    assert watch.observe(A, RequestState.PENDING, T0 + 20.5) is Action.DONE
    assert watch.outcomes[A] == Outcome.TIMEOUT
    assert watch.done


@pytest.mark.parametrize(
    "error",
    [
        DropboxSignRateLimitError(429, "exceeded_rate", "Too many requests."),
        DropboxSignServerError(503, "server_error", "Service Temporarily Unavailable"),
        DropboxSignConnectionError(None, "connection_error", "ConnectionResetError"),
        DropboxSignDeadlineError(None, "deadline_passed", "not sent: the deadline passed, past its deadline"),
    ],
)
def test_recancel_without_an_answer_counts_for_nothing(error: Exception) -> None:
    watch = watch_of({A: "cancel_requested"}, recancel_after=10.0)
    watch.recanceled(A, error, T0 + 11)  # type: ignore[arg-type]
    assert watch.pending[A] == {"last_cancel_at": T0, "cancel_attempts": 1, "may_recancel": True}
    assert watch.observe(A, RequestState.PENDING, T0 + 12) is Action.RECANCEL


@pytest.mark.parametrize(
    "error",
    [
        DropboxSignDeletedError(410, "deleted", "This resource has been deleted."),
        # The request was signed between the poll and the re-cancel: an answer, not a crash.
        DropboxSignBadRequestError(400, "bad_request", "This request has already been completed."),
    ],
)
def test_answered_recancel_counts_even_when_refused(error: Exception) -> None:
    watch = watch_of({A: "cancel_requested"}, recancel_after=10.0)
    watch.recanceled(A, error, T0 + 11)  # type: ignore[arg-type]
    assert watch.pending[A] == {"last_cancel_at": T0 + 11, "cancel_attempts": 2, "may_recancel": True}


def test_expire_settles_what_is_still_pending_at_the_deadline() -> None:
    watch = watch_of({A: "cancel_requested", B: "cancel_requested", C: "completed"}, timeout=60.0)
    watch.observe(A, RequestState.CANCELED, T0 + 1)
    assert watch.expire(T0 + 59.9) is False
    assert watch.outcomes[B] == "cancel_requested"
    assert watch.expire(T0 + 60.0) is True
    assert watch.outcomes == {A: "canceled", B: Outcome.TIMEOUT, C: "completed"}
    assert watch.expire(T0 + 61.0) is False  # nothing left to expire


def test_next_recancel_at() -> None:
    watch = watch_of({A: "cancel_requested", B: "cancel_requested"}, timeout=60.0, recancel_after=20.0)
    watch.recanceled(A, None, T0 + 5)
    assert watch.next_recancel_at() == T0 + 20.0
    watch.settle(B, "canceled")
    assert watch.next_recancel_at() == T0 + 25.0
    watch.settle(A, "canceled")
    assert watch.next_recancel_at() == T0 + 60.0


def test_json_round_trip_keeps_every_clock() -> None:
    watch = watch_of({A: "cancel_requested", B: "cancel_requested", C: "declined"}, recancel_after=7.5)
    watch.recanceled(A, None, T0 + 8)
    watch.errors[C] = "Dropbox Sign HTTP 400"  # what a trigger carries for an id it could not read
    data = json.loads(json.dumps(watch.to_json()))
    rebuilt = CancellationWatch.from_json(data)
    assert rebuilt == watch
    assert rebuilt.errors == {C: "Dropbox Sign HTTP 400"}
    assert rebuilt.pending[A] == {"last_cancel_at": T0 + 8, "cancel_attempts": 2, "may_recancel": True}
    assert list(rebuilt.outcomes) == [A, B, C]
    # The rebuilt watch answers exactly as the original would.
    for at in (T0 + 10, T0 + 15.5):
        assert rebuilt.observe(B, RequestState.PENDING, at) is watch.observe(B, RequestState.PENDING, at)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("max_cancel_attempts", 0, "max_cancel_attempts 0"), ("recancel_after", -1.0, "recancel_after -1.0")],
)
def test_a_stored_state_with_a_bad_setting_is_refused_naming_it(field: str, value: Any, named: str) -> None:
    data = {**watch_of({A: "cancel_requested"}).to_json(), field: value}
    with pytest.raises(ValueError, match=named):
        CancellationWatch.from_json(data)


@pytest.mark.parametrize(
    ("outcome", "on_completed", "reason"),
    [
        ("canceled", "fail", None),
        ("already_canceled", "fail", None),
        ("cancel_requested", "fail", None),
        ("completed", "ignore", None),
        ("declined", "ignore", None),
        ("completed", "fail", "completed before it could be cancelled"),
        ("declined", "fail", "declined before it could be cancelled"),
        ("not_found", "ignore", "not found (404)"),
        ("forbidden", "ignore", "forbidden (403)"),
        ("unauthorized", "ignore", "unauthorized (401)"),
        (Outcome.TIMEOUT, "ignore", "cancellation not confirmed in time"),
        ("would_cancel", "fail", None),
        ("something_new", "ignore", "something_new"),
    ],
)
def test_failure_reason(outcome: str, on_completed: str, reason: str | None) -> None:
    got = failure_reason(outcome, on_completed)
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(reason)


def test_event_lists_each_failing_id_and_why() -> None:
    watch = watch_of({A: "cancel_requested", B: "cancel_requested", C: "completed"})
    watch.settle(A, "canceled")
    watch.settle(B, "not_found")
    event = watch.event("fail")
    assert event["status"] == "failure"
    assert event["outcomes"] == {A: "canceled", B: "not_found", C: "completed"}
    assert set(event["failures"]) == {B, C}
    assert event["message"].startswith("1 canceled, 1 completed, 1 not_found; 2 failed: ")
    assert f"{B}: not found (404)" in event["message"]
    assert f"{C}: completed before" in event["message"]
    ignored = watch.event("ignore")
    assert ignored["status"] == "failure"
    assert set(ignored["failures"]) == {B}
    json.dumps(event)  # a trigger event payload must be plain JSON


def test_summarize_and_table() -> None:
    assert summarize({}, {}) == "no signature requests"
    assert summarize({A: "canceled", B: "canceled"}, {}) == "2 canceled"
    table = outcome_table({A: "canceled", "ab" * 8: "timeout"})
    lines = table.splitlines()
    assert lines[0].split() == ["signature_request_id", "outcome"]
    assert lines[2].split() == [A, "canceled"]
    assert lines[3].split() == ["ab" * 8, "timeout"]
    assert outcome_table({}) == "(no signature requests)"


def test_finish_returns_or_fails() -> None:
    log = Recorder()
    ok = CancellationEvent(status="success", outcomes={A: "canceled"}, failures={}, message="1 canceled")
    assert finish(ok, log) == {A: "canceled"}
    assert A in log.text("info")
    bad = CancellationEvent(
        status="failure", outcomes={A: "not_found"}, failures={A: "not found"}, message=f"{A}: not found"
    )
    with pytest.raises(AirflowFailException, match=f"{A}: not found"):
        finish(bad, log)
    with pytest.raises(AirflowException, match=f"{A}: not found") as retryable:
        finish(bad, log, retryable=True)
    assert not isinstance(retryable.value, AirflowFailException)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((-1, 10, 5, 3), "poke_interval -1"),
        ((0, 10, 5, 3), "poke_interval 0"),
        ((1, float("nan"), 5, 3), "timeout nan"),
        ((1, 10, 0, 3), "recancel_after 0"),
        ((1, 10, "11", 3), "recancel_after '11'"),
        ((1, -5, 5, 3), "timeout -5"),
        ((1, 0, 5, 3), "timeout 0"),
        ((1, True, 5, 3), "timeout True"),
        ((1, "120", 5, 3), "timeout '120'"),
        ((1, 10, 5, 0), "max_cancel_attempts 0"),
        ((1, 10, 5, 1.5), "max_cancel_attempts 1.5"),
        ((True, 10, 5, 3), "poke_interval True"),
    ],
)
def test_check_wait_settings_names_the_value(args: tuple[Any, ...], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        check_wait_settings(*args)


def test_check_wait_settings_accepts_good_values() -> None:
    check_wait_settings(0.1, 10, 10, 1)


def test_a_timeout_shorter_than_recancel_after_is_accepted_and_said_once() -> None:
    check_wait_settings(60, 120, 3600, 3)
    log = Recorder()
    watch = watch_of({A: "cancel_requested"}, timeout=120.0, recancel_after=3600.0)
    log_no_recancel(watch, 120.0, log)
    assert log.text("info") == (
        "timeout 120 s is not longer than recancel_after 3600 s: no re-cancel can happen within this "
        "timeout; ids not confirmed by then end as timeout"
    )
    # A timeout equal to recancel_after leaves no room either: the deadline comes first.
    equal = Recorder()
    log_no_recancel(watch_of({A: "cancel_requested"}, timeout=3600.0, recancel_after=3600.0), 3600.0, equal)
    assert "no re-cancel can happen within this timeout" in equal.text("info")
    quiet = Recorder()
    log_no_recancel(watch_of({A: "cancel_requested"}, timeout=7200.0, recancel_after=3600.0), 7200.0, quiet)
    log_no_recancel(watch_of({A: "canceled"}, timeout=120.0, recancel_after=3600.0), 120.0, quiet)
    assert quiet.lines == []


@pytest.mark.parametrize("poll_at_once", [True, False], ids=["poll-at-once", "poll-later"])
def test_a_tasks_wait_starts_with_its_settings(poll_at_once: bool) -> None:
    settings = WaitSettings(
        poll_interval=30.0,
        timeout=120.0,
        recancel_after=3600.0,
        max_cancel_attempts=3,
        on_completed="fail",
        event_first=False,
    )
    log = Recorder()
    before = time.time()
    wait = ConfirmationWait.start(
        settings,
        {A: "cancel_requested", B: "error"},
        log,
        poll_at_once=poll_at_once,
        may_recancel=False,
        errors={B: "Dropbox Sign HTTP 400"},
    )
    after = time.time()
    watch = wait.watch
    assert before + 120 <= watch.deadline <= after + 120
    assert (watch.recancel_after, watch.max_cancel_attempts, wait.poll_interval) == (3600.0, 3, 30.0)
    assert list(watch.pending) == [A]
    assert watch.pending[A]["may_recancel"] is False
    assert (watch.outcomes, watch.errors) == (
        {A: "cancel_requested", B: "error"},
        {B: "Dropbox Sign HTTP 400"},
    )
    # Cancels just sent tell nothing yet: their first read waits a poll interval.
    assert before + (0 if poll_at_once else 30) <= wait.next_poll <= after + (0 if poll_at_once else 30)
    assert "no re-cancel can happen within this timeout" in log.text("info")


def test_watched_ids_are_never_recancelled_and_time_out_at_the_deadline() -> None:
    watch = watch_of({A: "cancel_requested"}, timeout=100.0, recancel_after=10.0, may_recancel=False)
    assert watch.pending[A] == {"last_cancel_at": T0, "cancel_attempts": 0, "may_recancel": False}
    for at in (T0 + 10, T0 + 50, T0 + 99.9):
        assert watch.observe(A, RequestState.PENDING, at) is Action.WAIT
    assert watch.next_recancel_at() == T0 + 100.0
    assert watch.expire(T0 + 100.0)
    assert watch.outcomes[A] == Outcome.TIMEOUT


def test_state_stored_without_may_recancel_only_watches() -> None:
    # Trigger kwargs written before the field existed: nothing says a cancel was asked for.
    old = {
        "pending": {A: {"last_cancel_at": T0, "cancel_attempts": 1}},
        "outcomes": {A: "cancel_requested"},
        "deadline": T0 + 100,
        "recancel_after": 10.0,
        "max_cancel_attempts": 3,
    }
    watch = CancellationWatch.from_json(old)
    assert watch.pending[A]["may_recancel"] is False
    assert watch.errors == {}
    assert watch.observe(A, RequestState.PENDING, T0 + 50) is Action.WAIT


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_a_may_recancel_that_is_not_a_bool_is_refused(flag: Any) -> None:
    data = watch_of({A: "cancel_requested"}).to_json()
    data["pending"][A]["may_recancel"] = flag
    with pytest.raises(ValueError, match=f"may_recancel {flag!r} of signature request {A}"):
        CancellationWatch.from_json(data)


def test_check_on_completed() -> None:
    check_on_completed("fail")
    check_on_completed("ignore")
    with pytest.raises(ValueError, match="on_completed 'skip' must be one of fail, ignore"):
        check_on_completed("skip")


GONE = DropboxSignDeletedError(410, "deleted", "This resource has been deleted.")
PENDING: dict[str, Any] = {"is_complete": False, "is_declined": False}


def drive(wait: ConfirmationWait, woken: list[str], answers: dict[str, Any]) -> list[tuple[str, str]]:
    """Run one step with no I/O: answer each call from ``answers``; return the calls it made."""
    calls: list[tuple[str, str]] = []
    steps = wait.step(woken, Recorder())
    try:
        call = next(steps)
        while True:
            calls.append((call[0], call[1]))
            call = steps.send(answers[call[1]] if call[0] == "get" else None)
    except StopIteration:
        return calls


def test_a_step_reads_the_woken_ids_at_once_and_the_others_when_the_poll_is_due() -> None:
    now = time.time()
    watch = CancellationWatch.start(dict.fromkeys((A, B, C), "cancel_requested"), now, timeout=100)
    wait = ConfirmationWait(watch, poll_interval=50, next_poll=now + 50)
    assert drive(wait, [B], {B: GONE}) == [("get", B)]
    assert watch.outcomes[B] == Outcome.CANCELED
    assert drive(wait, [], {}) == []  # nothing woken, poll not due: nothing is read
    assert wait.seconds_to_poll(now) == 50
    wait.next_poll = 0.0
    assert drive(wait, [B], {A: PENDING, C: GONE}) == [("get", A), ("get", C)]  # B settled: skipped
    assert list(watch.pending) == [A]
    assert wait.next_poll > now + 49  # the next poll is an interval after this one


def test_a_step_at_the_deadline_reads_every_pending_id_once_before_it_times_out() -> None:
    now = time.time()
    watch = CancellationWatch.start(dict.fromkeys((A, B), "cancel_requested"), now - 10, timeout=10)
    wait = ConfirmationWait(watch, poll_interval=3600, next_poll=now + 3600)
    assert wait.seconds_to_poll(now) == 0  # the deadline comes before the next poll
    assert drive(wait, [], {A: GONE, B: PENDING}) == [("get", A), ("get", B)]
    assert watch.done
    assert watch.outcomes == {A: Outcome.CANCELED, B: Outcome.TIMEOUT}
