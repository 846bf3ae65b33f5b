"""A call given a deadline is never sent after it, however long the rate limit or a retry would wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from dropbox_sign_provider.cancellation.state import RequestState, request_state
from dropbox_sign_provider.exceptions import DropboxSignDeadlineError, DropboxSignServerError
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing import DropboxSignEmulator


def _cancels(emu: DropboxSignEmulator) -> int:
    return sum(1 for r in emu.requests_log if r.method == "POST")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_cancel_that_would_wait_past_its_deadline_for_the_rate_limit_is_not_sent(
    one_call_a_minute: DropboxSignEmulator, kind: str
) -> None:
    emu = one_call_a_minute
    first, second = (emu.create_signature_request()["signature_request_id"] for _ in range(2))
    started = time.monotonic()
    if kind == "sync":
        hook = DropboxSignHook()
        hook.cancel_signature_request(first)
        with pytest.raises(DropboxSignDeadlineError, match="past its deadline") as raised:
            hook.cancel_signature_request(second, deadline=time.time() + 2)
    else:

        async def cancel_both() -> None:
            async with DropboxSignAsyncHook(retry_policy=RetryPolicy(max_rate_limit_wait=None)) as hook:
                await hook.cancel_signature_request(first)
                await hook.cancel_signature_request(second, deadline=time.time() + 2)

        with pytest.raises(DropboxSignDeadlineError, match="past its deadline") as raised:
            asyncio.run(cancel_both())
    # Refused at once, not after waiting out the window; and nothing went out for the second id.
    assert time.monotonic() - started < 2
    assert _cancels(emu) == 1
    assert emu.get_state(second) == "awaiting_signature"
    assert request_state(raised.value) is RequestState.TRANSIENT


def test_a_retry_that_would_go_out_past_the_deadline_is_not_made(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    sr_id = emulator.create_signature_request()["signature_request_id"]
    emulator.set_fault(error_rate=1.0, error_statuses=(503,))
    hook = DropboxSignHook(retry_policy=RetryPolicy(max_retries=5, backoff_base=2.0, backoff_max=2.0))
    with pytest.raises(DropboxSignServerError):
        hook.cancel_signature_request(sr_id, deadline=time.time() + 0.5)
    assert _cancels(emulator) == 1


def test_a_deadline_already_passed_sends_nothing(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    sr_id = emulator.create_signature_request()["signature_request_id"]
    with pytest.raises(DropboxSignDeadlineError):
        DropboxSignHook().get_signature_request(sr_id, deadline=time.time() - 1)
    assert emulator.requests_log == []
