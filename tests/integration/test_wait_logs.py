"""
What the hooks log while they wait: every wait for the rate limit longer than a second at INFO, with
its cause and its end, and retry lines whose delay is the real one. Both hooks, one suite.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from dropbox_sign_provider.hooks.budget import HELD_BY_CAP, HELD_BY_NEXT_WINDOW, HELD_BY_WINDOW, AccountBudget
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import API_KEY, HookClient, make_requests

WINDOW = 3.0
pytestmark = pytest.mark.emulator(rate_limit=2, window_seconds=WINDOW)


def at_window_start() -> None:
    # The emulator's windows are aligned to multiples of their length: start one afresh, so the
    # wait for the next is close to a whole window.
    time.sleep(WINDOW - time.time() % WINDOW + 0.05)


@pytest.fixture
def fresh_window(
    emulator: DropboxSignEmulator, key_conn: str, client: Callable[..., HookClient]
) -> tuple[HookClient, str]:
    """A hook of the parametrised client and one request's id, at the start of a window."""
    sr_id = make_requests(emulator, 1)[0]
    hook = client(key_conn)
    at_window_start()
    return hook, sr_id


def said(log_events: list[dict[str, Any]], level: str) -> list[str]:
    # The hooks' own lines only: Airflow 3.1 adds a warning of its own about the connection type.
    return [
        str(e["event"])
        for e in log_events
        if e["log_level"] == level and str(e["event"]).startswith("Dropbox Sign ")
    ]


def test_a_wait_for_the_window_is_logged_with_its_cause_and_end(
    emulator: DropboxSignEmulator, fresh_window: tuple[HookClient, str], log_events: list[dict[str, Any]]
) -> None:
    hook, sr_id = fresh_window
    hook.get(sr_id)
    hook.get(sr_id)
    started = time.time()
    hook.get(sr_id)  # the window is spent: the budget holds this one back
    waited = time.time() - started

    waits = [line for line in said(log_events, "info") if ": waiting " in line]
    assert len(waits) == 1, waits
    match = re.fullmatch(
        rf"Dropbox Sign GET /signature_request/{sr_id}: waiting (\d+\.\d) s for "
        rf"({re.escape(HELD_BY_WINDOW.format(limit=2))}|{re.escape(HELD_BY_NEXT_WINDOW)}), "
        r"until (\d\d:\d\d:\d\d) UTC",
        waits[0],
    )
    assert match, waits[0]
    assert abs(float(match[1]) - waited) < 0.5
    # The end is stated when the wait starts, which a busy machine may reach a little after `started`.
    ends = {time.strftime("%H:%M:%S", time.gmtime(t)) for t in (started + float(match[1]), started + waited)}
    assert match[3] in ends, (match[3], ends)
    assert [status for status in (r.status for r in emulator.requests_log)] == [200, 200, 200]


def test_a_retry_after_a_429_states_the_real_delay(
    emulator: DropboxSignEmulator, fresh_window: tuple[HookClient, str], log_events: list[dict[str, Any]]
) -> None:
    hook, sr_id = fresh_window
    for _ in range(2):  # another client spends the account's window
        requests.get(f"{emulator.base_url}/account", auth=(API_KEY, ""), timeout=10)
    started = time.time()
    hook.get(sr_id)  # 429, then retried once the window is over
    waited = time.time() - started

    retries = said(log_events, "warning")
    assert len(retries) == 1, retries
    match = re.fullmatch(
        rf"Dropbox Sign GET /signature_request/{sr_id} failed \(429 exceeded_rate\); retrying in "
        r"(\d+\.\d) s \((\d+\.\d) s back-off, then (\d+\.\d) s for (.+)\), at \d\d:\d\d:\d\d UTC",
        retries[0],
    )
    assert match, retries[0]
    assert abs(float(match[1]) - waited) < 0.5  # was "retrying in 0.1 s", then a 3 s wait unsaid
    assert float(match[1]) == pytest.approx(float(match[2]) + float(match[3]), abs=0.11)
    # The wait is said once: the retry line counts it, no second line repeats it.
    assert [line for line in said(log_events, "info") if ": waiting " in line] == []


def test_the_budget_names_what_holds_a_send_back() -> None:
    budget = AccountBudget(max_requests_per_minute=2)
    budget.observe({}, 200, now=0.0)  # answers without rate-limit headers: the cap paces alone
    assert budget.reserve(now=0.0).held_by == ""
    assert budget.reserve(now=0.0).held_by == ""
    third = budget.reserve(now=1.0)
    assert (third.wait, third.held_by) == (59.0, HELD_BY_CAP.format(cap=2))
    # A send booked behind it waits for the same.
    assert budget.earliest(now=2.0) == (60.0, HELD_BY_CAP.format(cap=2))
