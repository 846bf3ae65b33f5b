"""The confirmation watch's poll rounds against the emulator, with the sync hook and the async one."""

from __future__ import annotations

import asyncio
import time

import pytest

from dropbox_sign_provider.cancellation.outcomes import Outcome
from dropbox_sign_provider.cancellation.watch import CancellationWatch, ConfirmationWait, arun_step, run_step
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import Recorder, make_requests, refusal


def test_one_step_against_the_emulator(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    hook = DropboxSignHook(dropbox_sign_conn, retry_policy=RetryPolicy(max_retries=0))
    queued, lost = make_requests(emulator, 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    emulator.set_fault(never_complete=1)
    for sr_id in (queued, lost):
        hook.cancel_signature_request(sr_id)
    emulator.set_fault(never_complete=False)
    hook.cancel_signature_request(queued)  # after the lost first one: this one takes effect
    now = time.time()
    watch = CancellationWatch.start(
        {queued: "cancel_requested", lost: "cancel_requested", signed: "cancel_requested"},
        now,
        timeout=30.0,
        recancel_after=0.3,
    )
    log = Recorder()
    time.sleep(0.25)
    read_every_pending_id(hook, watch, log)
    assert watch.outcomes == {queued: "canceled", lost: "cancel_requested", signed: "completed"}
    assert emulator.cancel_calls(lost) == 1
    time.sleep(0.1)
    read_every_pending_id(hook, watch, log)  # lost is due: cancelled again, which now takes effect
    assert emulator.cancel_calls(lost) == 2
    assert watch.pending[lost]["cancel_attempts"] == 2
    assert (
        f"Signature request {lost}: cancellation not confirmed 0 s after cancel #1; cancelling again"
        in log.text("warning")
    )
    assert f"Signature request {queued}: canceled" in log.text("debug")
    time.sleep(0.25)
    read_every_pending_id(hook, watch, log)
    assert watch.done
    assert watch.outcomes[lost] == "canceled"


CLIENTS = pytest.mark.parametrize("kind", ["sync", "async"])


def read_every_pending_id(
    hook: DropboxSignHook, watch: CancellationWatch, log: Recorder, poll_interval: float = 60.0
) -> None:
    """One step of a wait whose poll is due: every pending id is read, those due re-cancelled."""
    run_step(hook, ConfirmationWait(watch, poll_interval, next_poll=0.0), [], log)


def poll(kind: str, watch: CancellationWatch, log: Recorder, poll_interval: float = 60.0) -> None:
    """One step with the sync hook (the operator, the sensor) or the async one, as a trigger has it."""
    if kind == "sync":
        read_every_pending_id(DropboxSignHook(), watch, log, poll_interval)
        return

    async def one_round() -> None:
        async with DropboxSignAsyncHook(retry_policy=RetryPolicy(max_rate_limit_wait=None)) as hook:
            await arun_step(hook, ConfirmationWait(watch, poll_interval, next_poll=0.0), [], log)

    asyncio.run(one_round())


@CLIENTS
def test_one_bad_answer_ends_only_its_id(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, kind: str
) -> None:
    bad, good, other = make_requests(emulator, 3)
    hook = DropboxSignHook(dropbox_sign_conn, retry_policy=RetryPolicy(max_retries=0))
    for sr_id in (bad, good, other):
        hook.cancel_signature_request(sr_id)
    time.sleep(0.3)
    emulator.add_odd_answers(refusal(400, bad))
    # The bad id comes first: an error that escaped would drop the outcome of every other id.
    watch = CancellationWatch.start(
        {bad: "cancel_requested", good: "cancel_requested", other: "cancel_requested"},
        time.time(),
        timeout=30.0,
        recancel_after=5,
    )
    log = Recorder()
    poll(kind, watch, log)
    assert watch.done
    assert watch.outcomes == {bad: "error", good: "canceled", other: "canceled"}
    event = watch.event("fail")
    assert event["status"] == "failure"
    assert event["failures"] == {
        bad: "Dropbox Sign HTTP 400 bad_request: Signature request is in an invalid state. "
        f"(GET /signature_request/{bad})"
    }
    assert log.text("warning") == (
        f"Signature request {bad}: Dropbox Sign HTTP 400 bad_request: Signature request is in an invalid "
        f"state. (GET /signature_request/{bad}); not waiting for it any longer"
    )
    assert emulator.cancel_calls(bad) == 1  # an error is no reason to cancel again


#: An account allowed one call a minute: after one GET, a re-cancel would wait for a minute.
@CLIENTS
def test_a_recancel_that_would_go_out_after_the_deadline_is_not_sent(
    one_call_a_minute: DropboxSignEmulator, kind: str
) -> None:
    emu = one_call_a_minute
    sr_id = emu.create_signature_request()["signature_request_id"]
    now = time.time()
    # Cancelled 10 s ago, never confirmed, due for a re-cancel; 1.5 s left before the deadline.
    watch = CancellationWatch.start(
        {sr_id: "cancel_requested"}, now - 10, timeout=11.5, recancel_after=5.0, max_cancel_attempts=3
    )
    log = Recorder()
    poll(kind, watch, log, poll_interval=0.5)
    assert [r.method for r in emu.requests_log] == ["GET"]
    assert [r for r in emu.requests_log if r.method == "POST" and r.time > watch.deadline] == []
    assert time.time() < watch.deadline  # refused at once rather than after waiting for the budget
    # Not sent counts for nothing: still due, with the one cancel sent before...
    assert watch.pending[sr_id]["cancel_attempts"] == 1
    # ...and the deadline settles it as timeout.
    assert watch.expire(watch.deadline)
    assert watch.outcomes == {sr_id: Outcome.TIMEOUT}
