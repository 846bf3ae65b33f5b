"""
DropboxSignAsyncHook against the bundled emulator over loopback: what only the async hook does
(concurrent calls on one budget, cancelled calls, the aiohttp session shared per event loop). What
both hooks share is in test_both_hooks.py.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import pytest

from dropbox_sign_provider.exceptions import (
    DropboxSignServerError,
)
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import (
    FAST,
    NO_RETRY,
    SECRET_ACCESS_TOKEN,
    SECRET_API_KEY,
    make_requests,
    set_connection,
    statuses,
)

pytestmark = pytest.mark.emulator(api_keys=(SECRET_API_KEY,), access_tokens=(SECRET_ACCESS_TOKEN,))

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def get(conn_id: str, sr_id: Any, **hook_kwargs: Any) -> dict[str, Any]:
    async with DropboxSignAsyncHook(conn_id, **hook_kwargs) as hook:
        return await hook.get_signature_request(sr_id)


async def cancel(conn_id: str, sr_id: Any, **hook_kwargs: Any) -> None:
    async with DropboxSignAsyncHook(conn_id, **hook_kwargs) as hook:
        await hook.cancel_signature_request(sr_id)


# --- authentication and the connection ----------------------------------------------------------


def test_a_malformed_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = set_connection(
        monkeypatch, "ds_bad_host", host="https://api.hellosign.com:port", password=SECRET_API_KEY
    )
    with pytest.raises(ValueError, match="'ds_bad_host' has host"):
        run(DropboxSignAsyncHook(conn_id).get_settings())


# --- get and cancel --------------------------------------------------------------------------------


# --- every error, typed --------------------------------------------------------------------------


def test_a_non_json_error_page_is_still_a_typed_error(emulator: DropboxSignEmulator, key_conn: str) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(error_rate=1.0, error_statuses=(502,), seed=1)
    with pytest.raises(DropboxSignServerError) as raised:
        run(get(key_conn, sr_id, retry_policy=NO_RETRY))
    assert raised.value.error_msg.startswith("<html>")
    assert "502 Bad Gateway" in raised.value.error_msg


# --- invalid ids ---------------------------------------------------------------------------------

# --- the rate limit ------------------------------------------------------------------------------


def test_twenty_concurrent_calls_share_a_five_per_second_budget_without_429s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with DropboxSignEmulator(api_keys=(SECRET_API_KEY,), rate_limit=5, window_seconds=1) as emulator:
        conn_id = set_connection(monkeypatch, "ds_budget", host=emulator.base_url, password=SECRET_API_KEY)
        sr_ids = make_requests(emulator, 20)

        async def main() -> list[dict[str, Any]]:
            # Twenty triggers of one triggerer, each with its own hook.
            return await asyncio.gather(*(get(conn_id, sr_id) for sr_id in sr_ids))

        got = run(main())
        log = list(emulator.requests_log)

    assert [sr["signature_request_id"] for sr in got] == sr_ids
    assert sum(entry.status == 429 for entry in log) <= 1
    per_window = Counter(math.floor(entry.time) for entry in log if entry.status == 200)
    assert max(per_window.values()) <= 5
    assert sum(per_window.values()) == 20
    assert len(per_window) >= 4


def test_sync_and_async_hooks_of_one_account_draw_on_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

    with DropboxSignEmulator(api_keys=(SECRET_API_KEY,), rate_limit=4, window_seconds=1) as emulator:
        conn_id = set_connection(monkeypatch, "ds_mixed", host=emulator.base_url, password=SECRET_API_KEY)
        sr_ids = make_requests(emulator, 12)

        async def main() -> list[Any]:
            loop = asyncio.get_running_loop()

            def task(sr_id: str) -> dict[str, Any]:
                return DropboxSignHook(conn_id).get_signature_request(sr_id)

            in_threads = [loop.run_in_executor(None, task, sr_id) for sr_id in sr_ids[:6]]
            in_loop = [get(conn_id, sr_id) for sr_id in sr_ids[6:]]
            return await asyncio.gather(*in_threads, *in_loop)

        got = run(main())
        log = list(emulator.requests_log)

    assert sorted(sr["signature_request_id"] for sr in got) == sorted(sr_ids)
    assert sum(entry.status == 429 for entry in log) <= 1
    per_window = Counter(math.floor(entry.time) for entry in log if entry.status == 200)
    assert max(per_window.values()) <= 4


def test_a_429_holds_the_next_send_until_the_announced_reset(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(rate_limit_storm=1.0, seed=1)

    async def main() -> dict[str, Any]:
        task = asyncio.ensure_future(get(key_conn, sr_id, retry_policy=FAST))
        # Cleared once the first call was refused, however long a busy machine took to send it.
        deadline = time.monotonic() + 30
        while not emulator.requests_log and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        emulator.clear_faults()
        return await task

    assert run(main())["signature_request_id"] == sr_id
    log = emulator.requests_log
    assert [entry.status for entry in log] == [429, 200]
    assert math.floor(log[1].time) > math.floor(log[0].time)


# --- retries -------------------------------------------------------------------------------------


def test_concurrent_calls_get_through_server_errors_and_dropped_connections(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    sr_ids = make_requests(emulator, 10)
    emulator.set_fault(error_rate=0.3, drop_rate=0.2, malformed_rate=0.1, seed=21)
    policy = RetryPolicy(max_retries=10, backoff_base=0.01, backoff_max=0.05)

    async def main() -> list[Any]:
        gets = [get(key_conn, sr_id, retry_policy=policy) for sr_id in sr_ids[:6]]
        cancels = [cancel(key_conn, sr_id, retry_policy=policy) for sr_id in sr_ids[6:]]
        return await asyncio.gather(*gets, *cancels)

    results = run(main())
    assert [sr["signature_request_id"] for sr in results[:6]] == sr_ids[:6]
    seen = Counter(statuses(emulator))
    assert seen[0] > 0
    assert sum(n for status, n in seen.items() if status >= 500) > 0
    assert [emulator.cancel_calls(sr_id) for sr_id in sr_ids[6:]] == [1] * 4


# --- cancellation ----------------------------------------------------------------------------------


def test_a_cancelled_call_does_not_stall_the_account(emulator: DropboxSignEmulator, key_conn: str) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(latency=0.6)

    async def main() -> dict[str, Any]:
        # The first call of a fresh budget is its probe; its trigger is cancelled mid-call.
        probe = asyncio.ensure_future(get(key_conn, sr_id))
        await asyncio.sleep(0.3)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        emulator.clear_faults()
        return await asyncio.wait_for(get(key_conn, sr_id), timeout=3)

    assert run(main())["signature_request_id"] == sr_id


# --- the shared session --------------------------------------------------------------------------


def test_one_session_per_event_loop_and_connection(key_conn: str, token_conn: str) -> None:
    async def main() -> tuple[aiohttp.ClientSession, ...]:
        async with DropboxSignAsyncHook(key_conn) as first:
            shared = await first.get_session()
            async with DropboxSignAsyncHook(key_conn) as second:
                assert await second.get_session() is shared
                async with DropboxSignAsyncHook(token_conn) as other:
                    by_token = await other.get_session()
                    assert by_token is not shared
                assert by_token.closed
            # The first hook still uses it.
            assert not shared.closed
            assert await first.get_session() is shared
        assert shared.closed  # the last user left
        async with DropboxSignAsyncHook(key_conn) as again:
            fresh = await again.get_session()
            assert fresh is not shared
            assert not fresh.closed
        return shared, fresh

    first_loop = run(main())
    second_loop = run(main())
    assert all(session.closed for session in first_loop + second_loop)
    assert not set(first_loop) & set(second_loop)


def test_sessions_of_different_event_loops_are_not_shared(key_conn: str) -> None:
    import threading

    sessions: dict[str, aiohttp.ClientSession] = {}
    both_open = threading.Barrier(2, timeout=5)

    async def hold(name: str) -> None:
        async with DropboxSignAsyncHook(key_conn) as hook:
            sessions[name] = await hook.get_session()
            await asyncio.get_running_loop().run_in_executor(None, both_open.wait)

    threads = [threading.Thread(target=lambda n=name: asyncio.run(hold(n))) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sessions["a"] is not sessions["b"]
    assert sessions["a"].closed
    assert sessions["b"].closed


# --- secrets -------------------------------------------------------------------------------------


def test_a_retry_policy_given_replaces_the_default_backoff(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    # The default backoff would take 7.5 s at least for these four retries.
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(error_rate=1.0, error_statuses=(500,), seed=1)
    started = time.monotonic()
    with pytest.raises(DropboxSignServerError):
        run(
            get(key_conn, sr_id, retry_policy=RetryPolicy(max_retries=4, backoff_base=0.01, backoff_max=0.05))
        )
    assert time.monotonic() - started < 1.0
    assert statuses(emulator) == [500] * 5
