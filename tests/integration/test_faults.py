"""
The fault matrix: cancel and confirm many signature requests through the operator (waiting in the
task, or deferring to the trigger) while the emulator injects one kind of failure, and check that
every id ends confirmed or in an explicit, reported failure, that no id is lost or counted twice,
that nothing escapes unhandled and that requests the run was not given are never touched.

The default run uses 100 ids per fault; ``make chaos`` runs the same matrix with 1,000.
Run with ``-s`` to see the table of retries and outcomes per fault.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
import structlog
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred
from airflow.sdk.module_loading import import_string

import dropbox_sign_provider.hooks.dropbox_sign as hooks_module
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.compat import serde
from tests.helpers import API_KEY, FakeTI, connection_uri_json, make_requests

#: One seed for every fault, so a failing run can be replayed.
SEED = 20_260_101
#: Airflow retries of each task, as the example clean-up DAG sets for its API tasks.
TASK_RETRIES = 2
#: Requests the run is not given; none of them may ever be touched.
BYSTANDERS = 20
#: Backoff and rate-limit waits of the hooks run at this fraction of real time (not the poll interval).
FAST_SLEEP = 0.02
CHAOS = os.environ.get("DROPBOX_SIGN_CHAOS") == "1"

CONFIRMED = frozenset({"canceled", "already_canceled"})
RETRY_MESSAGE = "); retrying in"
NO_VERDICT_MESSAGE = "no verdict this time"
#: A failure names each id with a reason; when the task kept no outcomes, the reason tells it.
REASONS = {"cancellation not confirmed in time": "timeout"}


# --- time as the hooks see it --------------------------------------------------------------------


class _ScaledTime:
    """The ``time`` module with shorter sleeps: the hooks' backoff stays real, only faster."""

    def __init__(self, real: ModuleType, factor: float) -> None:
        self._real = real
        self._factor = factor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        self._real.sleep(seconds * self._factor)


class _ScaledAsyncio(_ScaledTime):
    """The ``asyncio`` module with shorter sleeps, for the async hook."""

    async def sleep(self, seconds: float) -> None:  # type: ignore[override]
        await self._real.sleep(seconds * self._factor)


def scale_hook_sleeps(monkeypatch: pytest.MonkeyPatch, factor: float) -> None:
    """Shorten every wait of both hooks (backoff, rate-limit waits) by ``factor``."""
    if factor != 1.0:
        monkeypatch.setattr(hooks_module, "time", _ScaledTime(time, factor))
        monkeypatch.setattr(hooks_module, "asyncio", _ScaledAsyncio(asyncio, factor))


# --- a task instance as Airflow runs it ---------------------------------------------------------


def rebuild_trigger(trigger: Any) -> Any:
    """What the triggerer runs: the trigger rebuilt from its serialized kwargs after a serde round trip."""
    classpath, kwargs = trigger.serialize()
    stored = serde.deserialize(serde.serialize(kwargs))
    return import_string(classpath)(**stored)


async def first_event(trigger: Any) -> Any:
    """Run a trigger until its first event, as the triggerer does."""
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


@dataclass
class TaskRun:
    """One Airflow task (with its retries) cancelling a chunk of ids."""

    ids: list[str]
    deferrable: bool
    attempts: int = 0
    result: dict[str, str] | None = None
    failure: str | None = None
    #: whether the last failure lets Airflow retry the task (not an AirflowFailException)
    retryable: bool = False
    #: the last outcomes the task reported (return value, trigger event or its ``outcomes`` XCom)
    reported: dict[str, str] = field(default_factory=dict)
    unhandled: list[BaseException] = field(default_factory=list)
    deferred_timeouts: list[Any] = field(default_factory=list)
    #: ids reported as "error" (a call given up after the hook's retries), summed over the attempts
    error_outcomes: int = 0


def make_operator(run: TaskRun, settings: dict[str, Any]) -> CancelSignatureRequestOperator:
    return CancelSignatureRequestOperator(
        task_id=f"cancel_{'deferred' if run.deferrable else 'waiting'}",
        signature_request_ids=list(run.ids),
        wait_for_confirmation=True,
        deferrable=run.deferrable,
        **settings,
    )


def attempt(run: TaskRun, settings: dict[str, Any], stage: str = "all") -> TaskDeferred | None:
    """
    One attempt of the task: ``execute``, and when it defers, the trigger and ``execute_complete``.

    ``stage="cancel"`` stops at the deferral and returns it, so the caller can run the trigger later.
    """
    run.attempts += 1
    run.result = None
    run.retryable = False
    ti = FakeTI()
    operator = make_operator(run, settings)
    try:
        try:
            run.result = operator.execute({"ti": ti})  # type: ignore[arg-type]
            run.reported = dict(run.result)
            return None
        except TaskDeferred as deferred:
            run.deferred_timeouts.append(deferred.timeout)
            if stage == "cancel":
                return deferred
            finish_deferred(run, operator, ti, deferred)
            return None
    except AirflowException as failed:
        record_failure(run, ti, failed)
    except Exception as unexpected:
        run.unhandled.append(unexpected)
    return None


def finish_deferred(run: TaskRun, operator: Any, ti: FakeTI, deferred: TaskDeferred) -> None:
    """Run the deferred trigger to its event and resume the task with it."""
    event = asyncio.run(first_event(rebuild_trigger(deferred.trigger)))
    run.reported = dict(event.payload["outcomes"])
    try:
        run.result = getattr(operator, deferred.method_name)({"ti": ti}, event=event.payload)
    except AirflowException as failed:
        record_failure(run, ti, failed)


def record_failure(run: TaskRun, ti: FakeTI, failed: AirflowException) -> None:
    if "outcomes" in ti.xcoms:
        run.reported = dict(ti.xcoms["outcomes"])
        run.error_outcomes += sum(1 for outcome in ti.xcoms["outcomes"].values() if outcome == "error")
    run.failure = str(failed)
    run.retryable = not isinstance(failed, AirflowFailException)


def run_task(run: TaskRun, settings: dict[str, Any], deferred: TaskDeferred | None = None) -> TaskRun:
    """The task with Airflow's retries: a retryable failure runs it again, a fail-fast one ends it."""
    try:
        if deferred is not None:
            operator = make_operator(run, settings)
            finish_deferred(run, operator, FakeTI(), deferred)
        else:
            attempt(run, settings)
        retry_while_allowed(run, settings)
    except Exception as unexpected:
        run.unhandled.append(unexpected)
    return run


def retry_while_allowed(run: TaskRun, settings: dict[str, Any]) -> None:
    """Airflow's retries: run the task again while it failed retryably and has retries left."""
    while run.failure and run.retryable and run.attempts <= TASK_RETRIES:
        run.failure = None
        attempt(run, settings)


# --- the matrix ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """
    One row of the matrix.

    :param faults: keyword arguments of ``DropboxSignEmulator.set_fault``.
    :param chunk: ids per task when the tasks run concurrently; ``None`` runs two tasks (one
        waiting, one deferring) one after the other, so the seeded fault sequence of the cancel
        calls is reproducible.
    :param expect: ``confirmed`` (every id cancelled and confirmed) or ``timeout`` (every id a
        reported failure).
    :param cancels_per_id: cancel calls that must reach the API per id and task attempt.
    """

    name: str
    faults: dict[str, Any]
    chunk: int | None = None
    sleep_scale: float = FAST_SLEEP
    recancel_after: float = 30.0
    max_cancel_attempts: int = 3
    expect: str = "confirmed"
    cancels_per_id: int = 1


FAULTS = [
    Fault("2 s latency", {"latency": 2.0}, chunk=2, sleep_scale=1.0),
    Fault("30% 5xx", {"error_rate": 0.3, "error_statuses": (500, 502, 503, 504)}),
    Fault("20% dropped connections", {"drop_rate": 0.2}),
    Fault("10% malformed JSON", {"malformed_rate": 0.1}),
    Fault("429 storm (30% of calls)", {"rate_limit_storm": 0.3}),
    Fault(
        "first cancel lost",
        {"never_complete": 1},
        recancel_after=0.5,
        cancels_per_id=2,
    ),
    Fault(
        "cancels never complete",
        {"never_complete": True},
        recancel_after=0.5,
        max_cancel_attempts=2,
        expect="timeout",
        cancels_per_id=2,
    ),
]


@dataclass
class Row:
    fault: str
    ids: int
    calls: int
    faulted: int
    retries: int
    outcomes: Counter[str]
    gave_up: int
    task_retries: int
    bystanders_touched: int
    seconds: float


ROWS: list[Row] = []


def format_table(rows: list[Row]) -> str:
    header = (
        "fault",
        "ids",
        "API calls",
        "faulted",
        "retries",
        "gave up",
        "task retries",
        "outcomes",
        "bystanders",
        "s",
    )
    lines = [header]
    for row in rows:
        outcomes = ", ".join(f"{n} {name}" for name, n in sorted(row.outcomes.items()))
        lines.append(
            (
                row.fault,
                str(row.ids),
                str(row.calls),
                str(row.faulted),
                str(row.retries),
                str(row.gave_up),
                str(row.task_retries),
                outcomes,
                str(row.bystanders_touched),
                f"{row.seconds:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


@pytest.fixture(scope="module", autouse=True)
def _print_table() -> Iterator[None]:
    yield
    if ROWS:
        print("\n\nFault matrix\n" + format_table(ROWS))


@pytest.fixture
def fast_emulator(
    make_emulator: Callable[..., DropboxSignEmulator], monkeypatch: pytest.MonkeyPatch
) -> DropboxSignEmulator:
    """An emulator whose rate limit never binds (the faults are the point) and quick cancellations."""
    emulator = make_emulator(rate_limit=1_000_000, cancel_delay=0.1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
        connection_uri_json(emulator.base_url, max_requests_per_minute=1_000_000),
    )
    return emulator


def classify(run: TaskRun, sr_id: str) -> str:
    """``confirmed``, ``reported: <outcome>`` (a failure naming the id), or ``unaccounted: ...``."""
    if run.failure is None and run.result is not None:
        outcome = run.result.get(sr_id, "missing")
        return "confirmed" if outcome in CONFIRMED else f"unaccounted: returned {outcome}"
    if run.failure is not None and f"{sr_id}: " in run.failure:
        reason = run.failure.split(f"{sr_id}: ", 1)[1].split(";", 1)[0].strip()
        return f"reported: {run.reported.get(sr_id) or REASONS.get(reason, reason[:60])}"
    if run.failure is not None and run.reported.get(sr_id) in CONFIRMED:
        # A failed task still reports (XCom "outcomes") the ids the API confirmed with a 410.
        return "confirmed"
    return f"unaccounted: {run.reported.get(sr_id, 'no outcome')} in a failed task"


def run_matrix(emulator: DropboxSignEmulator, fault: Fault, n: int, chunk: int | None) -> tuple[Row, dict]:
    ids = make_requests(emulator, n)
    bystanders = make_requests(emulator, BYSTANDERS)
    settings = {
        "poke_interval": 0.2,
        "timeout": 120.0,
        "recancel_after": fault.recancel_after,
        "max_cancel_attempts": fault.max_cancel_attempts,
    }
    emulator.set_fault(**fault.faults, seed=SEED)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        if chunk is None:
            half = n // 2
            deferring = TaskRun(ids[half:], deferrable=True)
            waiting = TaskRun(ids[:half], deferrable=False)
            # Cancels first, in a fixed order: the seeded faults then hit the same cancel calls every run.
            deferral = attempt(deferring, settings, stage="cancel")
            run_task(waiting, settings)
            if deferral is not None:
                run_task(deferring, settings, deferral)
            else:
                # It failed before it could defer: Airflow's retries have their turn.
                retry_while_allowed(deferring, settings)
            runs = [waiting, deferring]
        else:
            runs = [TaskRun(ids[i : i + chunk], deferrable=(i // chunk) % 2 == 1) for i in range(0, n, chunk)]
            with ThreadPoolExecutor(max_workers=len(runs)) as pool:
                list(pool.map(lambda run: run_task(run, settings), runs))
    seconds = time.monotonic() - started
    emulator.clear_faults()

    log = list(emulator.requests_log)
    events = [str(entry.get("event", "")) for entry in logs]
    verdicts = {sr_id: classify(run, sr_id) for run in runs for sr_id in run.ids}
    outcomes = Counter(
        "canceled" if verdict == "confirmed" else verdict.removeprefix("reported: ")
        for verdict in verdicts.values()
    )
    touched = [sr_id for sr_id in bystanders if any(sr_id in entry.path for entry in log)]
    row = Row(
        fault=fault.name,
        ids=n,
        calls=len(log),
        faulted=sum(1 for entry in log if entry.status == 0 or entry.status == 429 or entry.status >= 500),
        retries=sum(1 for event in events if RETRY_MESSAGE in event),
        outcomes=outcomes,
        gave_up=sum(run.error_outcomes for run in runs) + sum(1 for e in events if NO_VERDICT_MESSAGE in e),
        task_retries=sum(run.attempts - 1 for run in runs),
        bystanders_touched=len(touched),
        seconds=seconds,
    )
    detail = {
        "ids": ids,
        "bystanders": bystanders,
        "runs": runs,
        "verdicts": verdicts,
        "no_verdicts": sum(1 for event in events if NO_VERDICT_MESSAGE in event),
        "log": log,
        "events": events,
    }
    return row, detail


def check_row(emulator: DropboxSignEmulator, fault: Fault, row: Row, detail: dict) -> None:
    ids, runs, verdicts = detail["ids"], detail["runs"], detail["verdicts"]
    unhandled = [repr(exc) for run in runs for exc in run.unhandled]
    assert unhandled == [], f"{fault.name}: exceptions escaped: {unhandled}"

    # Nothing lost, nothing counted twice: each id exactly once, in exactly one task's report.
    assert sorted(verdicts) == sorted(ids)
    assert sum(len(run.ids) for run in runs) == len(ids)
    assert sum(row.outcomes.values()) == len(ids)
    unaccounted = {k: v for k, v in verdicts.items() if v.startswith("unaccounted")}
    assert unaccounted == {}, f"{fault.name}: {len(unaccounted)} ids neither confirmed nor reported"

    if fault.expect == "confirmed":
        # The hook retries each call 5 times and Airflow the task twice: an id may still end as a
        # reported error when one call failed six times in a row in each attempt, which is rare.
        errors = [k for k, v in verdicts.items() if v == "reported: error"]
        expected = {"canceled": len(ids) - len(errors), "error": len(errors)}
        assert row.outcomes == Counter({k: n for k, n in expected.items() if n}), format_table([row])
        assert len(errors) <= max(2, len(ids) // 100), format_table([row])
        assert sum(run.error_outcomes for run in runs) <= max(3, len(ids) // 50), format_table([row])
        confirmed = [k for k, v in verdicts.items() if v == "confirmed"]
        assert {emulator.get_state(sr_id) for sr_id in confirmed} == {"canceled"}
    else:
        assert row.outcomes == Counter({fault.expect: len(ids)}), format_table([row])
        assert {emulator.get_state(sr_id) for sr_id in ids} == {"cancel_requested"}
        for run in runs:
            assert run.failure is not None
            assert "cancellation not confirmed in time" in run.failure
            assert all(f"{sr_id}: cancellation not confirmed in time" in run.failure for sr_id in run.ids)

    # A cancel is irreversible: exactly the expected cancel calls reached the API, per task attempt.
    for run in runs:
        calls = {sr_id: emulator.cancel_calls(sr_id) for sr_id in run.ids}
        expected = fault.cancels_per_id
        assert all(expected <= c <= expected * run.attempts for c in calls.values()), (fault.name, calls)
        assert all(timeout is not None for timeout in run.deferred_timeouts)

    # The run was given only its ids: the others were never cancelled, nor even read.
    assert row.bystanders_touched == 0
    for sr_id in detail["bystanders"]:
        assert emulator.cancel_calls(sr_id) == 0
        assert emulator.get_state(sr_id) == "awaiting_signature"

    # Every faulted answer was either retried or given up on in the open (a poll with no verdict,
    # asked again next round); none went unnoticed. Cancels are counted exactly: a cancel resent
    # behind the code's back would be an irreversible call nobody decided on.
    if "latency" in fault.faults or "never_complete" in fault.faults:
        assert row.faulted == 0
        assert row.retries == 0
        return
    assert row.retries > 0
    log, events = detail["log"], detail["events"]
    cancel_retries = sum(1 for e in events if RETRY_MESSAGE in e and e.startswith("Dropbox Sign POST "))
    get_retries = sum(1 for e in events if RETRY_MESSAGE in e and e.startswith("Dropbox Sign GET "))
    assert cancel_retries + get_retries == row.retries
    if "malformed_rate" in fault.faults:
        # A malformed answer is a 200 in the emulator's log: only the retries show it.
        assert row.retries + detail["no_verdicts"] <= row.calls - len(ids)
        return
    faulted_cancels = sum(1 for e in log if e.method == "POST" and (e.status in (0, 429) or e.status >= 500))
    # Each "error" outcome is one call given up after its retries: mostly the cancel itself, or the
    # GET that was to tell what a refused cancel (a 410 on a task retry, say) meant.
    errors = sum(run.error_outcomes for run in runs)
    unseen = row.faulted - row.retries - errors - detail["no_verdicts"]
    # A faulted cancel was retried or given up on, never resent unseen.
    assert cancel_retries <= faulted_cancels <= cancel_retries + errors, (
        faulted_cancels,
        cancel_retries,
        errors,
    )
    if "drop_rate" in fault.faults:
        # aiohttp resends an idempotent GET once by itself when a kept-alive connection drops.
        dropped_gets = sum(1 for e in log if e.method == "GET" and e.status == 0)
        assert 0 <= unseen <= dropped_gets, (row, errors, detail["no_verdicts"])
    else:
        assert unseen == 0, (row, errors, detail["no_verdicts"])


def matrix_case(
    fault: Fault, n: int, chunk: int | None, emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale_hook_sleeps(monkeypatch, fault.sleep_scale)
    row, detail = run_matrix(emulator, fault, n, chunk)
    ROWS.append(row)
    print("\n" + format_table([row]))
    check_row(emulator, fault, row, detail)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_matrix(
    fault: Fault, fast_emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix_case(fault, 100, fault.chunk, fast_emulator, monkeypatch)


@pytest.mark.chaos
@pytest.mark.skipif(not CHAOS, reason="the 1,000-id matrix runs with make chaos (DROPBOX_SIGN_CHAOS=1)")
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_matrix_chaos(
    fault: Fault, fast_emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix_case(fault, 1000, None if fault.chunk is None else 10, fast_emulator, monkeypatch)


# --- what the matrix relies on, pinned down -----------------------------------------------------


def test_an_outage_longer_than_the_retries_fails_the_task_for_airflow_to_retry(
    fast_emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale_hook_sleeps(monkeypatch, FAST_SLEEP)
    ids = make_requests(fast_emulator, 2)
    fast_emulator.set_fault(error_rate=1.0, error_statuses=(503,))
    ti = FakeTI()

    with pytest.raises(AirflowException) as failed:
        CancelSignatureRequestOperator(task_id="cancel", signature_request_ids=ids).execute({"ti": ti})  # type: ignore[arg-type]

    # Every id was tried with all of the hook's retries, none reached the API, and each is named.
    attempts = Counter(entry.path.rsplit("/", 1)[1] for entry in fast_emulator.requests_log)
    assert attempts == dict.fromkeys(ids, 1 + DropboxSignHook().retry_policy.max_retries)
    assert all(fast_emulator.cancel_calls(sr_id) == 0 for sr_id in ids)
    assert all(f"{sr_id}: Dropbox Sign HTTP 503" in str(failed.value) for sr_id in ids)
    assert ti.xcoms["outcomes"] == dict.fromkeys(ids, "error")
    # Nothing was cancelled and running the task again is safe: Airflow's retries must get their turn
    # (the example DAG gives its API tasks retries=2 for exactly this), so not a fail-fast error.
    assert not isinstance(failed.value, AirflowFailException), (
        "an outage that outlasted the hook's retries failed the task with AirflowFailException, "
        "which Airflow never retries"
    )


def test_a_429_is_retried_no_sooner_than_the_reset_it_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    # A long window, so that the reset the budget learns first lies well after the 429's own reset.
    with DropboxSignEmulator(api_keys=(API_KEY,), window_seconds=3600, cancel_delay=0.1) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(emulator.base_url))
        (sr_id,) = make_requests(emulator, 1)
        while 3600 - time.time() % 3600 < 5:  # not right at the end of a window
            time.sleep(0.5)
        hook = DropboxSignHook()
        hook.get_account()  # the budget now knows the account's window from the headers
        emulator.set_fault(rate_limit_storm=1.0)
        cancelling = threading.Thread(target=hook.cancel_signature_request, args=(sr_id,))
        cancelling.start()
        deadline = time.monotonic() + 30
        while not any(e.status == 429 for e in emulator.requests_log) and time.monotonic() < deadline:
            time.sleep(0.002)
        emulator.clear_faults()
        cancelling.join(timeout=60)

    cancels = [e for e in emulator.requests_log if e.method == "POST"]
    assert cancels[0].status == 429
    assert cancels[-1].status == 200
    assert emulator.cancel_calls(sr_id) == 1
    # The emulator's storm announces X-Ratelimit-Reset = ceil(now + 1): no earlier retry can succeed.
    announced_reset = math.ceil(cancels[0].time + 1)
    gap = cancels[1].time - cancels[0].time
    assert cancels[1].time >= announced_reset, (
        f"retried {gap:.2f} s after the 429, before its announced reset"
    )
