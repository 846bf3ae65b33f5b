"""
The rate limit on its own: the ``X-RateLimit-*`` headers, each account's budget of sends (probe
first, windows, the client-side cap) and which connections share one. Every clock reading is passed
in, nothing is sent. How long a failed call waits before it is retried is in test_retry_policy.py.
"""

from __future__ import annotations

import base64
import random
import threading
from collections import Counter

import pytest
import requests.structures
from multidict import CIMultiDict, CIMultiDictProxy

from dropbox_sign_provider.exceptions import (
    DropboxSignRateLimitError,
)
from dropbox_sign_provider.hooks.budget import AccountBudget, budget_for, budget_key
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.hooks.rate_limit_headers import RateLimitHeaders
from tests.helpers import answer_error

T0 = 1_800_000_000.0


def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    """Rate-limit headers spelt as Dropbox Sign spells them (lower-case ``l`` in the reset header)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-Ratelimit-Reset": str(int(reset)),
    }


def known_budget(limit: int, remaining: int, reset: float, now: float, cap: int = 1000) -> AccountBudget:
    """A budget whose probe has been answered with these headers at ``now``."""
    budget = AccountBudget(cap)
    assert budget.reserve(now=now).claimed
    budget.observe(headers(limit, remaining, reset), 200, now=now)
    return budget


def budget_with_window(limit: int, window: float) -> tuple[AccountBudget, float, float]:
    """
    A budget that has seen two consecutive resets ``window`` apart (at ``T0`` and ``T0 + window``),
    the second answered just after ``T0`` with all but one send of the window left.

    :return: the budget, the current time and the current window's reset.
    """
    budget = known_budget(limit, limit - 1, T0, now=T0 - window + 0.1)
    now = T0 + 0.1
    assert budget.reserve(now=now).claimed  # the first window is over: probe the next one
    budget.observe(headers(limit, limit - 1, T0 + window), 200, now=now)
    return budget, now, T0 + window


def drain(budget: AccountBudget, now: float) -> int:
    """
    Claim every slot free right now; return how many there were.

    Only for a budget that does not know its window's length: the reservation that ends the loop
    must not book a later slot.
    """
    claimed = 0
    while True:
        slot = budget.reserve(now=now)
        if not (slot.claimed and slot.wait == 0):
            return claimed
        claimed += 1


# --- RateLimitHeaders --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42", "X-Ratelimit-Reset": "1800000060"},
        {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42", "X-RateLimit-Reset": "1800000060"},
        {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "42", "x-ratelimit-reset": "1800000060"},
        {"X-RATELIMIT-LIMIT": "100", "X-RATELIMIT-REMAINING": "42", "X-RATELIMIT-RESET": "1800000060"},
    ],
    ids=["api-spelling", "canonical", "lower", "upper"],
)
def test_headers_are_read_whatever_their_case(raw: dict[str, str]) -> None:
    announced = RateLimitHeaders.from_headers(raw, now=T0)
    assert announced == RateLimitHeaders(limit=100, remaining=42, reset=1_800_000_060.0)


def test_headers_are_read_from_the_clients_header_types() -> None:
    raw = headers(25, 3, T0 + 30)
    from_requests = RateLimitHeaders.from_headers(requests.structures.CaseInsensitiveDict(raw), now=T0)
    from_aiohttp = RateLimitHeaders.from_headers(CIMultiDictProxy(CIMultiDict(raw)), now=T0)
    assert from_requests == from_aiohttp == RateLimitHeaders(limit=25, remaining=3, reset=T0 + 30)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42"},
        {"X-RateLimit-Limit": "100", "X-Ratelimit-Reset": "1800000060"},
        {"X-RateLimit-Remaining": "42", "X-Ratelimit-Reset": "1800000060"},
        {"X-RateLimit-Limit": "lots", "X-RateLimit-Remaining": "42", "X-Ratelimit-Reset": "1800000060"},
        {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "", "X-Ratelimit-Reset": "1800000060"},
        {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42", "X-Ratelimit-Reset": "soon"},
    ],
)
def test_missing_or_unreadable_headers_announce_nothing(raw: dict[str, str]) -> None:
    assert RateLimitHeaders.from_headers(raw, now=T0) is None


# --- AccountBudget: probe first ------------------------------------------------------------------


def test_one_probe_goes_first_and_the_others_wait_for_its_answer() -> None:
    budget = AccountBudget()
    probe = budget.reserve(now=T0)
    assert (probe.wait, probe.claimed) == (0, True)

    waiting = [budget.reserve(now=T0 + 0.001 * i) for i in range(3)]
    assert all(not slot.claimed for slot in waiting)
    # They wait for the probe's answer (woken by it), asking again within a second at the latest.
    assert all(slot.awaits_probe and 0 < slot.wait <= 1.0 for slot in waiting)

    budget.observe(headers(100, 99, T0 + 60), 200, now=T0 + 0.01)
    after = budget.reserve(now=T0 + 0.02)
    assert (after.wait, after.claimed) == (0, True)


def test_a_probe_that_got_no_answer_lets_the_next_request_probe() -> None:
    budget = AccountBudget()
    assert budget.reserve(now=T0).claimed
    assert not budget.reserve(now=T0 + 0.01).claimed

    budget.observe(None, None, now=T0 + 0.02)  # connection dropped: nothing learnt

    assert budget.reserve(now=T0 + 0.03).claimed
    assert not budget.reserve(now=T0 + 0.04).claimed  # and that one is the probe again


def test_answers_without_rate_limit_headers_leave_pacing_to_the_client_cap() -> None:
    # Behind a proxy that strips the headers, probing would send one request at a time forever.
    budget = AccountBudget(max_requests_per_minute=3)
    assert budget.reserve(now=T0).claimed
    budget.observe({"Content-Type": "text/html"}, 502, now=T0 + 0.01)
    assert budget.reserve(now=T0 + 0.02).claimed
    assert budget.reserve(now=T0 + 0.02).claimed
    capped = budget.reserve(now=T0 + 0.03)
    assert capped.claimed
    assert capped.wait == pytest.approx(60.0 - 0.03)


def test_headers_coming_back_restore_the_window_accounting() -> None:
    budget = AccountBudget(max_requests_per_minute=1000)
    assert budget.reserve(now=T0).claimed
    budget.observe({"Content-Type": "text/html"}, 502, now=T0 + 0.01)
    budget.observe(headers(2, 1, T0 + 60), 200, now=T0 + 0.02)
    assert budget.reserve(now=T0 + 0.03).claimed
    assert budget.reserve(now=T0 + 0.04).wait >= 59.9  # the window's 2 are spent


# --- AccountBudget: learning from headers --------------------------------------------------------


def test_remaining_budget_is_learnt_from_the_headers() -> None:
    budget = known_budget(limit=5, remaining=2, reset=T0 + 10, now=T0)
    assert drain(budget, T0 + 1) == 2

    held = budget.reserve(now=T0 + 1)
    # The window's length is unknown yet: wait for the reset, then probe the next window.
    assert not held.claimed
    assert 9 <= held.wait <= 9.5


def test_the_lower_case_reset_header_is_understood() -> None:
    budget = AccountBudget()
    assert budget.reserve(now=T0).claimed
    budget.observe(
        {"x-ratelimit-limit": "3", "x-ratelimit-remaining": "0", "X-Ratelimit-Reset": str(int(T0 + 4))},
        200,
        now=T0,
    )
    held = budget.reserve(now=T0 + 1)
    assert not held.claimed
    assert 3 <= held.wait <= 3.5


def test_usage_reported_by_the_api_counts_even_when_this_process_sent_less() -> None:
    budget = known_budget(limit=10, remaining=9, reset=T0 + 30, now=T0)
    # Another worker on the same account spent most of the window.
    assert budget.reserve(now=T0 + 1).claimed
    budget.observe(headers(10, 2, T0 + 30), 200, now=T0 + 1.1)
    assert drain(budget, T0 + 2) == 2


def test_a_late_answer_does_not_lower_what_is_known_to_be_used() -> None:
    budget = known_budget(limit=10, remaining=9, reset=T0 + 30, now=T0)
    assert drain(budget, T0 + 1) == 9
    # An answer that left the server early in the window says more was left than now is.
    budget.observe(headers(10, 8, T0 + 30), 200, now=T0 + 1.2)
    assert not budget.reserve(now=T0 + 1.3).claimed


def test_a_429_marks_the_window_spent_whatever_remaining_said() -> None:
    budget = known_budget(limit=10, remaining=9, reset=T0 + 20, now=T0)
    assert budget.reserve(now=T0 + 1).claimed
    budget.observe(headers(10, 7, T0 + 20), 429, now=T0 + 1.1)

    held = budget.reserve(now=T0 + 2)
    assert not held.claimed
    assert 18 <= held.wait <= 18.5


def test_once_an_unknown_window_is_over_one_probe_goes_first_again() -> None:
    budget = known_budget(limit=2, remaining=0, reset=T0 + 1, now=T0)
    held = budget.reserve(now=T0 + 0.5)
    assert not held.claimed

    probe = budget.reserve(now=T0 + 0.5 + held.wait)
    assert probe.claimed
    assert probe.wait == 0
    assert not budget.reserve(now=T0 + 0.5 + held.wait + 0.01).claimed


# --- AccountBudget: window learning and FIFO slots ----------------------------------------------


def test_the_window_length_is_learnt_from_two_consecutive_resets() -> None:
    budget, now, reset = budget_with_window(limit=3, window=2.0)
    # The probe took one of three.
    assert budget.reserve(now=now).wait == 0
    assert budget.reserve(now=now).wait == 0

    # With the window known, the next send is booked in the next window instead of probing.
    booked = budget.reserve(now=now)
    assert booked.claimed
    assert reset - now <= booked.wait <= reset - now + 0.2


def test_slots_are_handed_out_first_come_first_served_window_by_window() -> None:
    limit, window = 2, 1.0
    budget, now, reset = budget_with_window(limit=limit, window=window)

    slots = [budget.reserve(now=now) for _ in range(limit - 1 + 3 * limit)]
    assert all(slot.claimed for slot in slots)
    waits = [slot.wait for slot in slots]
    assert waits == sorted(waits)
    assert waits[: limit - 1] == [0] * (limit - 1)  # what the probe left of the current window
    later = waits[limit - 1 :]
    windows = Counter(int((now + wait - reset) // window) for wait in later)
    assert windows == {0: limit, 1: limit, 2: limit}
    for wait in later:
        send_at = now + wait
        # Every booked send is just after a window starts, never at its very end.
        assert 0 < (send_at - reset) % window <= 0.2


def test_concurrent_reservations_never_overbook_a_window() -> None:
    limit, window = 5, 1.0
    budget, now, reset = budget_with_window(limit=limit, window=window)
    results: list[float] = []
    lock = threading.Lock()

    def reserve() -> None:
        slot = budget.reserve(now=now)
        assert slot.claimed
        with lock:
            results.append(now + slot.wait)

    threads = [threading.Thread(target=reserve) for _ in range(4 * limit)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    per_window = Counter(int((at - reset) // window) if at >= reset else -1 for at in results)
    # The current window had limit - 1 left after the probe; each later one has the full limit.
    assert per_window[-1] == limit - 1
    assert max(per_window.values()) <= limit
    assert sum(per_window.values()) == 4 * limit


def test_no_send_is_booked_in_the_last_moment_of_a_window() -> None:
    budget = known_budget(limit=10, remaining=9, reset=T0 + 1, now=T0)
    # A send that leaves just before the reset may arrive after it and count in the next window.
    slot = budget.reserve(now=T0 + 1 - 0.001)
    assert not slot.claimed
    assert 0.001 < slot.wait <= 0.2


# --- AccountBudget: client-side cap ---------------------------------------------------------------


def test_the_client_side_cap_holds_over_a_sliding_minute() -> None:
    budget = known_budget(limit=1000, remaining=999, reset=T0 + 3600, now=T0, cap=3)
    # The probe was one send at T0.
    assert budget.reserve(now=T0 + 10).wait == 0
    assert budget.reserve(now=T0 + 20).wait == 0

    fourth = budget.reserve(now=T0 + 30)
    assert fourth.claimed
    assert fourth.wait == pytest.approx(30)  # the probe leaves the minute at T0 + 60
    fifth = budget.reserve(now=T0 + 30)
    assert fifth.claimed
    assert fifth.wait == pytest.approx(40)  # then the send at T0 + 10 does, at T0 + 70


def test_the_cap_also_paces_the_probe() -> None:
    budget = AccountBudget(max_requests_per_minute=1)
    assert budget.reserve(now=T0).claimed
    budget.observe(None, None, now=T0 + 0.1)
    probe = budget.reserve(now=T0 + 1)
    assert probe.claimed
    assert probe.wait == pytest.approx(59)


def test_max_wait_raises_without_claiming() -> None:
    budget = known_budget(limit=1000, remaining=999, reset=T0 + 3600, now=T0, cap=2)
    assert budget.reserve(now=T0 + 1).claimed

    with pytest.raises(DropboxSignRateLimitError) as raised:
        budget.reserve(now=T0 + 10, max_wait=5)
    error = raised.value
    assert error.status_code is None
    assert error.error_name == "exceeded_rate"
    assert error.retry_after == pytest.approx(50)
    assert "max_rate_limit_wait=5" in str(error)

    # Nothing was booked by the refusal, and nothing it looked at was forgotten either.
    slot = budget.reserve(now=T0 + 10)
    assert slot.claimed
    assert slot.wait == pytest.approx(50)
    assert budget.reserve(now=T0 + 10).wait == pytest.approx(51)


def test_max_wait_refusing_the_probe_lets_another_request_probe() -> None:
    budget = AccountBudget(max_requests_per_minute=1)
    assert budget.reserve(now=T0).claimed
    budget.observe(None, None, now=T0 + 0.1)

    with pytest.raises(DropboxSignRateLimitError):
        budget.reserve(now=T0 + 1, max_wait=1)
    probe = budget.reserve(now=T0 + 1)
    assert probe.claimed
    assert probe.wait == pytest.approx(59)


def test_max_wait_is_not_raised_when_the_wait_fits() -> None:
    budget = known_budget(limit=2, remaining=0, reset=T0 + 3, now=T0)
    slot = budget.reserve(now=T0, max_wait=5)
    assert not slot.claimed
    assert 3 <= slot.wait <= 3.5


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_requests_per_minute 0"):
        AccountBudget(0)


# --- RetryPolicy and the budget --------------------------------------------------------------------


def test_a_429_with_a_reset_holds_the_next_send_until_that_reset() -> None:
    budget = known_budget(limit=10, remaining=9, reset=T0 + 5, now=T0)
    assert budget.reserve(now=T0 + 1).claimed
    budget.observe(headers(10, 0, T0 + 5), 429, now=T0 + 1.1)
    delay = RetryPolicy().retry_delay(0, answer_error(429, retry_after=3.9), random.Random(3))
    assert delay is not None

    slot = budget.reserve(now=T0 + 1.1 + delay)
    assert T0 + 1.1 + delay + slot.wait >= T0 + 5


# --- budget_for ----------------------------------------------------------------------------------

SECRET = "sk-live-SECRETKEY123"


def test_one_budget_per_account_credentials() -> None:
    base = "https://api.hellosign.com/v3"
    auth = "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()
    shared = budget_for(budget_key(base, auth), 100)
    assert budget_for(budget_key(base, auth), 100) is shared
    assert budget_for(budget_key(base, "Bearer other-token"), 100) is not shared
    assert budget_for(budget_key("http://127.0.0.1:9/v3", auth), 100) is not shared


def test_the_budget_key_never_holds_the_secret() -> None:
    auth = "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()
    key = budget_key("https://api.hellosign.com/v3", auth)
    assert len(key) == 64
    int(key, 16)  # a hex digest
    for revealing in (SECRET, auth, auth.split()[1], "SECRETKEY"):
        assert revealing not in key
    assert budget_key("https://api.hellosign.com/v3", auth) == key


def test_the_lowest_cap_of_an_account_holds_for_every_connection() -> None:
    key = budget_key("https://api.hellosign.com/v3", "Bearer token")
    budget = budget_for(key, 80)
    assert budget_for(key, 20) is budget
    assert budget.max_requests_per_minute == 20
    budget_for(key, 100)
    assert budget.max_requests_per_minute == 20


def test_a_very_short_window_still_hands_out_every_slot() -> None:
    budget = AccountBudget()
    # Shorter than twice the margin kept around a reset.
    for now, reset in ((T0 - 0.05, T0), (T0 + 0.01, T0 + 0.08)):
        assert budget.reserve(now=now).claimed
        raw = {"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "1", "X-Ratelimit-Reset": repr(reset)}
        budget.observe(raw, 200, now=now)

    slots = [budget.reserve(now=T0 + 0.01) for _ in range(7)]
    assert all(slot.claimed for slot in slots)
    windows = Counter(int((T0 + 0.01 + slot.wait - (T0 + 0.08)) // 0.08) for slot in slots[1:])
    assert windows == {0: 2, 1: 2, 2: 2}


def test_an_idle_gap_is_not_taken_for_the_window_length() -> None:
    # Windows of 60 s and 100 requests: one call, eleven idle minutes, then a burst of calls.
    budget = known_budget(limit=100, remaining=99, reset=T0 + 60, now=T0 + 10)
    now = T0 + 700
    assert budget.reserve(now=now).claimed
    budget.observe(headers(100, 99, T0 + 720), 200, now=now)
    assert drain(budget, now) == 99

    # The next window opens at its reset: one probe there, then the rest of that window.
    now = T0 + 720.1
    assert budget.reserve(now=now, max_wait=120).claimed
    budget.observe(headers(100, 99, T0 + 780), 200, now=now)
    assert drain(budget, now) == 99
    # The window after that is the next one, 60 s on, not the 660 s the idle gap spanned.
    after = budget.reserve(now=now, max_wait=120)
    assert after.wait <= 60.0


@pytest.mark.parametrize(
    ("limit", "remaining", "reset"),
    [("0", "0", str(T0 + 60)), ("10", "5", "inf"), ("10", "5", "nan"), ("-3", "0", str(T0 + 60))],
)
def test_headers_that_would_stall_every_caller_are_ignored(limit: str, remaining: str, reset: str) -> None:
    raw = {"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": remaining, "X-Ratelimit-Reset": reset}
    assert RateLimitHeaders.from_headers(raw, now=T0) is None


def test_remaining_is_clamped_to_the_limit() -> None:
    raw = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "-5", "X-Ratelimit-Reset": str(T0 + 60)}
    announced = RateLimitHeaders.from_headers(raw, now=T0)
    assert announced is not None
    assert announced.remaining == 0


# --- rate-limit headers are evidence, not orders -------------------------------------------------


def http_date(at: float) -> str:
    import email.utils

    return email.utils.formatdate(at, usegmt=True)


@pytest.mark.parametrize(
    "reset",
    [
        str(int(T0 * 1000) + 60_000),  # milliseconds
        str(int(T0) + 3600),  # an hour ahead, no Date to explain it
        str(int(T0) - 3600),  # far past
        "-5",  # negative
        "0",
    ],
    ids=["milliseconds", "hour-ahead", "far-past", "negative", "zero"],
)
def test_a_value_that_cannot_be_a_reset_time_is_treated_like_a_missing_header(reset: str) -> None:
    raw = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-Ratelimit-Reset": reset}
    assert RateLimitHeaders.from_headers(raw, now=T0) is None
    # The budget then acts as on an answer without headers: it never parks the account.
    budget = AccountBudget(100)
    assert budget.reserve(now=T0).claimed
    budget.observe(raw, 429, now=T0)
    slot = budget.reserve(now=T0 + 0.01)
    assert slot.claimed
    assert slot.wait < 1


def test_a_reset_is_read_against_the_servers_clock_when_the_clocks_differ() -> None:
    # The server's clock is an hour ahead of ours; its reset is 20 s away on its own clock.
    raw = {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "0",
        "X-Ratelimit-Reset": str(int(T0) + 3600 + 20),
        "Date": http_date(T0 + 3600),
    }
    announced = RateLimitHeaders.from_headers(raw, now=T0)
    assert announced is not None
    assert announced.reset == pytest.approx(T0 + 20, abs=1)
    budget = AccountBudget(100)
    assert budget.reserve(now=T0).claimed
    budget.observe(raw, 429, now=T0)
    assert budget.reserve(now=T0 + 0.01).wait == pytest.approx(20, abs=1.1)


def test_close_clocks_keep_the_reset_as_announced() -> None:
    raw = {**headers(100, 5, T0 + 30), "Date": http_date(T0 + 1)}
    announced = RateLimitHeaders.from_headers(raw, now=T0)
    assert announced is not None
    assert announced.reset == T0 + 30


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), ("0", 0.0), ("3600", None), ("-1", None), ("soon", None), ("", None)],
)
def test_retry_after_is_honoured_when_a_rate_limit_could_mean_it(value: str, expected: float | None) -> None:
    from dropbox_sign_provider.hooks.rate_limit_headers import retry_after_seconds

    assert retry_after_seconds({"Retry-After": value}, now=T0) == expected


def test_retry_after_as_an_http_date() -> None:
    from dropbox_sign_provider.hooks.rate_limit_headers import retry_after_seconds

    seconds = retry_after_seconds({"Retry-After": http_date(T0 + 10)}, now=T0)
    assert seconds == pytest.approx(10, abs=1)


def test_a_429_with_only_retry_after_holds_the_account_until_then() -> None:
    budget = AccountBudget(100)
    assert budget.reserve(now=T0).claimed
    held = budget.observe({"Retry-After": "7"}, 429, now=T0)
    assert held == 7
    assert budget.reserve(now=T0 + 1).wait == pytest.approx(6, abs=0.01)


def test_a_released_slot_holds_nobody_back() -> None:
    budget = AccountBudget(1)
    assert budget.reserve(now=T0).claimed
    budget.observe(headers(100, 99, T0 + 62), 200, now=T0)
    far = budget.reserve(now=T0 + 1)  # the client-side cap books the next minute
    assert far.claimed
    assert far.at == pytest.approx(T0 + 60)
    budget.release(far.at)  # its caller was cancelled before it went out
    later = budget.reserve(now=T0 + 60.5)
    assert later.claimed
    assert later.wait == 0


def test_waiters_for_the_probe_are_woken_by_its_answer() -> None:
    budget = AccountBudget()
    assert budget.reserve(now=T0).claimed
    waiting = budget.reserve(now=T0)
    assert waiting.awaits_probe
    woken = threading.Event()

    def wait() -> None:
        budget.wait_for_probe(timeout=30)
        woken.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not woken.wait(0.1)
    budget.observe(headers(100, 99, T0 + 60), 200, now=T0)
    assert woken.wait(5)
    waiter.join()
