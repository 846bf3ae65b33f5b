"""
Restarts in the middle of a cancellation: a triggerer that stops while a trigger waits, and a
worker killed after its cancel calls were sent but before its result reached XCom.

A cancel is irreversible, so a restart must neither lose an id nor re-send cancels early, and a
retried task must recognise what the killed one already did.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk.module_loading import import_string

from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from dropbox_sign_provider.triggers.signature_request import SignatureRequestCanceledTrigger
from tests.compat import serde
from tests.helpers import FakeTI, cancel_times, connection_uri_json, make_requests, operator, run, sensor

RECANCEL_AFTER = 2.0
POLL = 0.1


@pytest.fixture
def account(
    make_emulator: Callable[..., DropboxSignEmulator], monkeypatch: pytest.MonkeyPatch
) -> DropboxSignEmulator:
    emulator = make_emulator(rate_limit=100_000)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
        connection_uri_json(emulator.base_url, max_requests_per_minute=100_000),
    )
    return emulator


def stored_kwargs(trigger: SignatureRequestCanceledTrigger) -> tuple[str, dict[str, Any]]:
    """What the metadata database keeps of a deferred trigger: its serialized kwargs after serde."""
    classpath, kwargs = trigger.serialize()
    return classpath, serde.deserialize(serde.serialize(kwargs))


async def run_until_event(trigger: SignatureRequestCanceledTrigger) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


async def run_then_stop(trigger: SignatureRequestCanceledTrigger, seconds: float) -> None:
    """Run a trigger for a while, then stop it the way a triggerer shutting down does."""
    task = asyncio.create_task(run_until_event(trigger))
    await asyncio.sleep(seconds)
    assert not task.done(), "the trigger finished before it could be stopped"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def defer(ids: list[str], **settings: Any) -> tuple[CancelSignatureRequestOperator, TaskDeferred]:
    task = operator(ids, wait_for_confirmation=True, deferrable=True, poke_interval=POLL, **settings)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    return task, deferred.value


# --- the triggerer stops while a trigger waits ----------------------------------------------------


def test_trigger_resumes_after_a_triggerer_restart_with_the_same_clocks(account: DropboxSignEmulator) -> None:
    ids = make_requests(account, 5)
    bystanders = make_requests(account, 3)
    # Every first cancel is lost: only the re-cancel, due RECANCEL_AFTER after it, confirms.
    account.set_fault(never_complete=1)
    task, deferred = defer(ids, timeout=60.0, recancel_after=RECANCEL_AFTER)
    classpath, kwargs = stored_kwargs(deferred.trigger)
    first_cancel = {sr_id: cancel_times(account, sr_id)[0] for sr_id in ids}
    gets_before = sum(1 for e in account.requests_log if e.method == "GET")

    # The triggerer runs it for a second (it polls and sees the cancellations still pending), then stops.
    first_life = import_string(classpath)(**kwargs)
    asyncio.run(run_then_stop(first_life, 1.0))
    stopped_at = time.time()
    assert sum(1 for e in account.requests_log if e.method == "GET") > gets_before
    assert {sr_id: account.cancel_calls(sr_id) for sr_id in ids} == dict.fromkeys(ids, 1)

    # Another triggerer rebuilds it from what the database kept: same deadline, same cancel clocks.
    second_life = import_string(classpath)(**kwargs)
    assert second_life.watch.deadline == first_life.watch.deadline == kwargs["deadline"]
    assert second_life.watch.deadline == pytest.approx(min(first_cancel.values()) + 60.0, abs=1.0)
    assert second_life.serialize()[1]["pending"] == kwargs["pending"]
    event = asyncio.run(run_until_event(second_life))

    assert event.payload["status"] == "success", event.payload
    assert event.payload["outcomes"] == dict.fromkeys(ids, "canceled")
    assert task.execute_complete({"ti": FakeTI()}, event=event.payload) == dict.fromkeys(  # type: ignore[arg-type]
        ids, "canceled"
    )
    delays = [cancel_times(account, i)[1] - cancel_times(account, i)[0] for i in ids]
    print(
        f"\n\nTriggerer restart: stopped {stopped_at - min(first_cancel.values()):.1f} s after the cancels, "
        f"re-cancelled {min(delays):.2f}-{max(delays):.2f} s after them "
        f"(recancel_after {RECANCEL_AFTER:g} s), "
        f"{sum(o == 'canceled' for o in event.payload['outcomes'].values())}/{len(ids)} confirmed"
    )
    for sr_id in ids:
        first, second = cancel_times(account, sr_id)
        # Not repeated before recancel_after, counted from the cancel the task sent, not from the restart.
        assert second >= first + RECANCEL_AFTER
        assert second < stopped_at + RECANCEL_AFTER
        assert account.get_state(sr_id) == "canceled"
    for sr_id in bystanders:
        assert account.cancel_calls(sr_id) == 0
        assert account.get_state(sr_id) == "awaiting_signature"


def test_trigger_resumed_after_its_deadline_ends_at_once(account: DropboxSignEmulator) -> None:
    ids = make_requests(account, 3)
    account.set_fault(never_complete=True)
    _, deferred = defer(ids, timeout=1.5, recancel_after=1.0, max_cancel_attempts=3)
    classpath, kwargs = stored_kwargs(deferred.trigger)

    asyncio.run(run_then_stop(import_string(classpath)(**kwargs), 0.5))
    # The triggerer stays down past the deadline.
    time.sleep(max(0.0, kwargs["deadline"] - time.time()) + 0.2)
    account.clear_log()
    event = asyncio.run(run_until_event(import_string(classpath)(**kwargs)))

    # The deadline is where it was: the resumed trigger reports at once instead of waiting anew,
    # after one look at each id (a confirmation may have arrived while it was down).
    assert event.payload["status"] == "failure"
    assert event.payload["outcomes"] == dict.fromkeys(ids, "timeout")
    assert set(event.payload["failures"]) == set(ids)
    assert sorted(e.path.rsplit("/", 1)[1] for e in account.requests_log if e.method == "GET") == sorted(ids)
    # Past the deadline nothing is cancelled again: the task is about to report these ids as failed.
    assert [e.path for e in account.requests_log if e.method == "POST"] == []
    assert {account.cancel_calls(sr_id) for sr_id in ids} == {1}


# --- a worker killed between its cancel calls and its XCom push -------------------------------------


class BlockingTI(FakeTI):
    """A task instance whose return-value push never returns: the worker dies right there."""

    def __init__(self, pushing: Any) -> None:
        super().__init__()
        self.pushing = pushing

    def xcom_push(self, key: str, value: Any) -> None:
        if key == "return_value":
            self.pushing.set()
            time.sleep(3600)


def worker(ids: list[str], pushing: Any) -> None:
    """A worker process running the task as the task runner does: execute, then push the result."""
    ti = BlockingTI(pushing)
    task = CancelSignatureRequestOperator(task_id="cancel", signature_request_ids=ids)
    ti.xcom_push("return_value", task.execute({"ti": ti}))  # type: ignore[arg-type]


def start_worker(ids: list[str]) -> tuple[Any, Any]:
    # A forked child is a separate worker process with its own memory (and its own account
    # budget), without paying for importing Airflow again.
    context = multiprocessing.get_context("fork")
    pushing = context.Event()
    process = context.Process(target=worker, args=(ids, pushing), daemon=True)
    process.start()
    return process, pushing


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.parametrize("killed", ["after every cancel", "halfway through the cancels"])
def test_task_retry_after_a_killed_worker_recognises_what_was_done(
    account: DropboxSignEmulator, killed: str
) -> None:
    ids = make_requests(account, 6)
    bystanders = make_requests(account, 3)
    halfway = killed.startswith("halfway")
    if halfway:
        account.set_fault(latency=0.3)  # slow enough to kill the worker between two cancels
    process, pushing = start_worker(ids)
    try:
        wanted = 3 if halfway else len(ids)
        wait_for(
            lambda: sum(account.cancel_calls(i) > 0 for i in ids) >= wanted or not process.is_alive(),
            60,
            "the worker's cancel calls",
        )
        if not halfway:
            # Killed between the cancels and the XCom push: execute() returned, its result is being pushed.
            assert pushing.wait(30), "the worker never got to push its result"
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=30)
    finally:
        if process.is_alive():
            process.kill()
    assert process.exitcode == -signal.SIGKILL
    account.clear_faults()

    sent = [i for i in ids if account.cancel_calls(i) > 0]
    assert len(sent) >= wanted
    assert all(account.cancel_calls(i) == 1 for i in sent)
    if halfway:
        assert len(sent) < len(ids), "the worker finished before it was killed"
    # Let the killed worker's cancellations take effect (or an in-flight one land) before the retry.
    time.sleep(0.5)
    wait_for(lambda: all(account.get_state(i) != "cancel_requested" for i in ids), 10, "cancellations")
    before_retry = {i: account.get_state(i) for i in ids}
    expected = {i: "already_canceled" if before_retry[i] == "canceled" else "cancel_requested" for i in ids}
    assert set(expected.values()) == (
        {"already_canceled", "cancel_requested"} if halfway else {"already_canceled"}
    )

    # Airflow retries the task: a fresh execute with the same ids.
    ti = FakeTI()
    retry = CancelSignatureRequestOperator(task_id="cancel", signature_request_ids=ids)
    outcomes = retry.execute({"ti": ti})  # type: ignore[arg-type]

    assert outcomes == expected
    counts = {o: list(outcomes.values()).count(o) for o in sorted(set(outcomes.values()))}
    landed = sum(state == "canceled" for state in before_retry.values())
    print(f"\n\nWorker killed {killed}: {landed}/{len(ids)} cancels had landed; the retry reports {counts}")
    assert "outcomes" not in ti.xcoms  # written only when the task fails
    # Each id was cancelled by exactly one of the two workers; the retry only asked.
    for sr_id in ids:
        assert account.cancel_calls(sr_id) == (2 if before_retry[sr_id] == "canceled" else 1)
    confirmed = run(sensor(outcomes, False, poke_interval=POLL, timeout=30.0, recancel_after=10.0))
    assert confirmed == {
        i: "already_canceled" if o == "already_canceled" else "canceled" for i, o in outcomes.items()
    }
    assert {account.get_state(i) for i in ids} == {"canceled"}
    for sr_id in bystanders:
        assert account.cancel_calls(sr_id) == 0
        assert account.get_state(sr_id) == "awaiting_signature"
