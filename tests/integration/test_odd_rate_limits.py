"""
Odd rate-limit answers over a real socket: headers in milliseconds or from a skewed clock, a 429
whose headers a proxy stripped, calls abandoned while they wait. None of them may park the account.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Iterator

import pytest

from dropbox_sign_provider.hooks.budget import AccountBudget, account_budget
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing import DropboxSignEmulator, OddAnswer
from tests.helpers import API_KEY, connection_uri_json

EXCEEDED = json.dumps({"error": {"error_msg": "Too many requests.", "error_name": "exceeded_rate"}})


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[DropboxSignEmulator]:
    with DropboxSignEmulator(api_keys=(API_KEY,), cancel_delay=0.2) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(emulator.url))
        yield emulator


def spent_window(reset: str, date: str | None = None) -> OddAnswer:
    """An answer that says the window is spent, with this reset (and Date)."""
    headers: dict[str, str | None] = {"X-RateLimit-Remaining": "0", "X-Ratelimit-Reset": reset}
    if date is not None:
        headers["Date"] = date
    return OddAnswer(headers=headers)


@pytest.mark.parametrize(
    "odd",
    [
        lambda now: spent_window(str(int(now * 1000))),
        lambda now: spent_window(str(int(now) + 3600)),
        lambda now: spent_window(str(int(now) - 7200)),
    ],
    ids=["milliseconds", "hour-ahead", "far-past"],
)
def test_a_nonsense_reset_never_parks_the_sync_hook(emu: DropboxSignEmulator, odd: object) -> None:
    sr_id = emu.create_signature_request()["signature_request_id"]
    emu.add_odd_answers(odd(time.time()))  # type: ignore[operator]
    hook = DropboxSignHook(retry_policy=RetryPolicy(max_rate_limit_wait=5))
    started = time.monotonic()
    for _ in range(5):
        hook.get_signature_request(sr_id)
    assert time.monotonic() - started < 3
    assert len(emu.requests_log) == 5


def test_a_nonsense_reset_never_parks_a_trigger(emu: DropboxSignEmulator) -> None:
    sr_id = emu.create_signature_request()["signature_request_id"]
    emu.add_odd_answers(spent_window(str(int(time.time() * 1000))))

    async def five_gets() -> None:
        async with DropboxSignAsyncHook(retry_policy=RetryPolicy(max_rate_limit_wait=None)) as hook:
            for _ in range(5):
                await hook.get_signature_request(sr_id)

    asyncio.run(asyncio.wait_for(five_gets(), timeout=5))
    assert len(emu.requests_log) == 5


def test_a_server_clock_an_hour_ahead_is_read_through_its_date_header(emu: DropboxSignEmulator) -> None:
    sr_id = emu.create_signature_request()["signature_request_id"]
    server_now = time.time() + 3600
    # The window is spent and resets 2 s from now, on the server's clock.
    emu.add_odd_answers(
        spent_window(str(int(server_now) + 2), email.utils.formatdate(server_now, usegmt=True))
    )
    hook = DropboxSignHook(retry_policy=RetryPolicy(max_rate_limit_wait=10))
    hook.get_signature_request(sr_id)
    started = time.monotonic()
    hook.get_signature_request(sr_id)
    # Waited for the reset as the server meant it (about 2 s), not for an hour, and not at all.
    assert 0.5 < time.monotonic() - started < 5


def test_retry_after_of_a_429_without_rate_headers_is_honoured(emu: DropboxSignEmulator) -> None:
    sr_id = emu.create_signature_request()["signature_request_id"]
    emu.add_odd_answers(OddAnswer(429, {"Retry-After": "2", "Content-Type": "application/json"}, EXCEEDED))
    hook = DropboxSignHook(retry_policy=RetryPolicy(max_retries=3, backoff_base=0.1, backoff_max=0.2))
    hook.get_signature_request(sr_id)
    refused, answered = emu.requests_log
    assert refused.status == 429
    assert answered.status == 200
    assert answered.time - refused.time >= 1.9


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_waiters_for_the_first_answer_do_not_poll(
    emu: DropboxSignEmulator, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the account's first request is out, the others wait for its answer instead of asking
    # the budget again every few milliseconds.
    sr_id = emu.create_signature_request()["signature_request_id"]
    emu.set_fault(latency=0.5)
    asked = 0
    reserve = AccountBudget.reserve

    def counting_reserve(self: AccountBudget, *args: object, **kwargs: object) -> object:
        nonlocal asked
        asked += 1
        return reserve(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AccountBudget, "reserve", counting_reserve)
    calls = 50
    if kind == "async":

        async def gets() -> None:
            async with DropboxSignAsyncHook() as hook:
                await asyncio.gather(*(hook.get_signature_request(sr_id) for _ in range(calls)))

        asyncio.run(gets())
    else:
        from concurrent.futures import ThreadPoolExecutor

        hook = DropboxSignHook()
        hook.get_signature_request  # noqa: B018 - settings read once before the threads start
        with ThreadPoolExecutor(calls) as pool:
            list(pool.map(lambda _: hook.get_signature_request(sr_id), range(calls)))
    assert len(emu.requests_log) == calls
    # Each call asks once, is woken by the first answer and asks once more.
    assert asked <= 2 * calls + 2


def test_a_trigger_cancelled_while_it_waits_gives_its_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    with DropboxSignEmulator(api_keys=(API_KEY,)) as emulator:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
            connection_uri_json(emulator.url, max_requests_per_minute=1),
        )
        sr_id = emulator.create_signature_request()["signature_request_id"]
        # A proxy strips the rate-limit headers: the client-side cap of 1 a minute paces alone.
        stripped: dict[str, str | None] = dict.fromkeys(
            ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-Ratelimit-Reset")
        )
        emulator.add_odd_answers(OddAnswer(headers=stripped, times=5))

        async def main() -> AccountBudget:
            async with DropboxSignAsyncHook(retry_policy=RetryPolicy(max_rate_limit_wait=None)) as hook:
                await hook.get_signature_request(sr_id)
                waiting = asyncio.ensure_future(hook.get_signature_request(sr_id))
                await asyncio.sleep(0.3)  # booked for a minute from now, and waiting for it
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                return account_budget(await hook.get_settings())

        budget = asyncio.run(main())
        # A minute after the first send the account has room again: nothing is still booked.
        after = budget.reserve(now=emulator.requests_log[0].time + 60.5)
        assert after.claimed
        assert after.wait == 0
        assert len(emulator.requests_log) == 1
