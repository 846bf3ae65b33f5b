"""
How calls to Dropbox Sign are paced and retried: one policy for the sync and the async hook.

Two small objects, each testable on its own with an explicit ``now``:

* :class:`AccountBudget` decides *when* a request may be sent. Dropbox Sign's rate limit belongs
  to the account, not to a client, so one budget is shared by every hook instance in a process that
  uses the same credentials (see :func:`budget_for`). It combines the client-side cap
  (``max_requests_per_minute``) with what the API said in its ``X-RateLimit-*`` headers, and hands
  out send times window by window, so a thousand waiting triggers queue for the budget instead of
  each spending it on its own clock.
* :class:`RetryPolicy` decides *whether* and *how long* to wait after a failed attempt: the
  server's reset time for 429s, exponential backoff with jitter for 5xx, dropped connections and
  unreadable answers, and never for other 4xx.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from dropbox_sign_provider.exceptions import (
    DropboxSignConnectionError,
    DropboxSignError,
    DropboxSignRateLimitError,
    DropboxSignResponseError,
    DropboxSignServerError,
)

#: Dropbox Sign's documented window for its per-minute limits.
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_REQUESTS_PER_MINUTE = 100

# While nothing is known of the account's remaining budget, one request goes first and the others
# wait this long before asking again: the first answer's headers tell how much may follow.
_PROBE_WAIT_SECONDS = 0.02
# The reset header has whole-second precision, clocks differ a little and a request takes a moment
# to arrive: start a new window a moment after the announced reset rather than at it, and send
# nothing in the same moment before a reset, when the request could be counted in either window.
_RESET_MARGIN_SECONDS = 0.05
# Spreads retries of many clients that were all told the same reset time.
_RESET_JITTER_SECONDS = 0.1


@dataclass(frozen=True)
class RetryPolicy:
    """
    Whether and when to retry a failed call (a value, not a loop).

    :param max_retries: retries after the first attempt, for any retryable failure.
    :param backoff_base: first backoff ceiling in seconds; doubles with every retry.
    :param backoff_max: highest backoff ceiling in seconds.
    :param max_rate_limit_wait: longest wait for the rate limit before a request is given up with
        :class:`~dropbox_sign_provider.exceptions.DropboxSignRateLimitError`; ``None`` waits as long
        as it takes (a trigger, which has its own deadline).
    """

    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_rate_limit_wait: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries {self.max_retries!r} must be 0 or more")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ValueError(
                f"backoff_base {self.backoff_base!r} and backoff_max {self.backoff_max!r} must satisfy "
                "0 < backoff_base <= backoff_max"
            )
        if self.max_rate_limit_wait is not None and self.max_rate_limit_wait < 0:
            raise ValueError(f"max_rate_limit_wait {self.max_rate_limit_wait!r} must be 0 or more, or None")

    @staticmethod
    def is_retryable(error: DropboxSignError) -> bool:
        """Only failures that say nothing about the request itself are worth another attempt."""
        return isinstance(
            error,
            DropboxSignRateLimitError
            | DropboxSignServerError
            | DropboxSignConnectionError
            | DropboxSignResponseError,
        )

    def retry_delay(self, retries_done: int, error: DropboxSignError, rng: random.Random) -> float | None:
        """
        Seconds to wait before retrying after ``error``, or ``None`` to give up and raise it.

        A 429 that announced its reset waits only a small jitter here: the account budget, which
        has seen the same headers, holds the next send back until the reset.

        :param retries_done: retries already made for this call.
        :param error: the failure of the last attempt.
        :param rng: random source of the jitter.
        """
        if retries_done >= self.max_retries or not self.is_retryable(error):
            return None
        # A reset this clock already sees as past (the clocks differ) gives the budget nothing to
        # hold the next send back for: back off instead of retrying at once.
        if (
            isinstance(error, DropboxSignRateLimitError)
            and (error.retry_after or 0.0) > _RESET_MARGIN_SECONDS
        ):
            return rng.uniform(0, _RESET_JITTER_SECONDS)
        return self.backoff(retries_done, rng)

    def backoff(self, retries_done: int, rng: random.Random) -> float:
        """
        Exponential backoff with jitter: a random delay between half the ceiling and the ceiling,
        so clients that failed together do not retry together.
        """
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**retries_done)
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class RateLimitHeaders:
    """The rate-limit state one answer announced."""

    limit: int
    remaining: int
    reset: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitHeaders | None:
        """
        Read ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-Ratelimit-Reset``.

        :param headers: the answer's headers, looked up case-insensitively (the API spells the
            reset header with a lower-case ``l``).
        :return: ``None`` when any of the three is missing or unreadable.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            limit = int(lowered["x-ratelimit-limit"])
            remaining = int(lowered["x-ratelimit-remaining"])
            reset = float(lowered["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return None
        # A limit below 1 or a reset that is not a time would stall every caller of the account.
        if limit < 1 or not math.isfinite(reset):
            return None
        return cls(limit=limit, remaining=min(max(remaining, 0), limit), reset=reset)


@dataclass(frozen=True)
class Slot:
    """
    The answer of :meth:`AccountBudget.reserve`.

    :param wait: seconds to wait.
    :param claimed: whether a send was booked for the end of the wait; when not, ask again then.
    """

    wait: float
    claimed: bool


class AccountBudget:
    """
    The request budget of one Dropbox Sign account, as seen from this process.

    Send times are handed out in order (first come, first served). A send is allowed when both
    hold: fewer than ``max_requests_per_minute`` sends in the last 60 seconds (the client-side cap),
    and room in the API's current window as its headers last described it. Usage counted locally
    and usage reported by the API are merged by taking the larger, so other processes drawing on
    the same account are accounted for as soon as an answer reports them.

    Thread-safe; the lock is never held while waiting, so the async hook can share it.

    :param max_requests_per_minute: client-side cap.
    """

    def __init__(self, max_requests_per_minute: int = DEFAULT_MAX_REQUESTS_PER_MINUTE) -> None:
        if max_requests_per_minute < 1:
            raise ValueError(f"max_requests_per_minute {max_requests_per_minute!r} must be 1 or more")
        self.max_requests_per_minute = max_requests_per_minute
        self._lock = threading.Lock()
        self._sends: deque[float] = deque()
        self._last_send = 0.0
        # The API's window as its headers described it. Until an answer anchors it (and again
        # after a window of unknown length has passed), one probe goes first.
        self._known = False
        self._limit = 0
        self._reset = 0.0
        # The last reset an answer announced; _reset also moves on by predicted windows.
        self._announced_reset = 0.0
        self._window: float | None = None
        # A lower bound of the window's length: an answer's reset is never more than one window away.
        self._window_at_least = 0.0
        # Sends counted per API window: 0 is the window ending at _reset, 1 the next one, ...
        self._used: dict[int, int] = {}
        self._probe_in_flight = False
        # Answers came without the headers (a proxy strips them): probing would then send one
        # request at a time, each waiting for the last; the client-side cap paces alone instead.
        self._headers_absent = False
        # Nothing is sent before this time: set by a 429 whose reset the window model did not expect.
        self._refused_until = 0.0

    def reserve(self, now: float | None = None, max_wait: float | None = None) -> Slot:
        """
        Claim the next send slot, or say how long to wait before asking again.

        :param now: the current Unix time (``time.time()`` when omitted).
        :param max_wait: give up instead of waiting longer than this.
        :raises DropboxSignRateLimitError: when the wait would be longer than ``max_wait``; nothing
            is claimed then.
        """
        now = time.time() if now is None else now
        with self._lock:
            while self._sends and self._sends[0] <= now - 60.0:
                self._sends.popleft()
            self._roll(now)
            if not self._known and self._probe_in_flight and not self._headers_absent:
                return Slot(_PROBE_WAIT_SECONDS, claimed=False)
            at, claimable = self._earliest_slot(now)
            wait = at - now
            if max_wait is not None and wait > max_wait:
                raise DropboxSignRateLimitError(
                    None,
                    "exceeded_rate",
                    f"the account's rate limit leaves no room for {wait:.1f} s, more than "
                    f"max_rate_limit_wait={max_wait:g} s; the request was not sent",
                    retry_after=wait,
                )
            if claimable:
                self._probe_in_flight = not self._known
                self._claim(at)
            return Slot(wait, claimed=claimable)

    def observe(
        self, headers: Mapping[str, str] | None, status_code: int | None, now: float | None = None
    ) -> None:
        """
        Learn from an answer (or from its absence, with ``headers=None``).

        :param headers: the answer's headers.
        :param status_code: the answer's status; a 429 means the current window is spent.
        :param now: the current Unix time.
        """
        now = time.time() if now is None else now
        announced = RateLimitHeaders.from_headers(headers) if headers is not None else None
        with self._lock:
            self._probe_in_flight = False
            if announced is None:
                self._headers_absent = self._headers_absent or headers is not None
                return
            self._headers_absent = False
            self._roll(now)
            used = announced.limit if status_code == 429 else announced.limit - announced.remaining
            self._limit = announced.limit
            self._window_at_least = max(self._window_at_least, announced.reset - now)
            if not self._known or announced.reset > self._reset + 0.5:
                self._anchor(announced.reset, now)
            elif announced.reset < self._reset - 0.5:
                if status_code == 429:
                    # The API refused until a reset the window model did not predict (the clocks
                    # differ): whatever the model says, nothing goes out before that reset.
                    self._refused_until = max(self._refused_until, announced.reset + _RESET_MARGIN_SECONDS)
                return  # a late answer from a window that is already over
            self._used[0] = max(self._used.get(0, 0), used)

    def _anchor(self, reset: float, now: float) -> None:
        last = self._announced_reset
        # Two announced resets are one window apart only when this answer came early in the
        # window after the earlier one; after an idle gap they are any multiple of it. Compare
        # with what the API announced, never with _reset rolled on by a predicted window length.
        if last and reset > last and 0 <= now - last < self._window_at_least / 2:
            elapsed = reset - last
            self._window = elapsed if self._window is None else min(self._window, elapsed)
        if self._known and reset > self._reset:
            elapsed = reset - self._reset
            self._shift(max(1, round(elapsed / self._window)) if self._window else 1)
        self._reset = reset
        self._announced_reset = reset
        self._known = True

    def _roll(self, now: float) -> None:
        if not self._known or now < self._reset:
            return
        if self._window is None:
            # The window has ended and its length is not known yet: probe again.
            self._known = False
            self._used.clear()
            return
        windows = math.floor((now - self._reset) / self._window) + 1
        self._shift(windows)
        self._reset += windows * self._window

    def _shift(self, windows: int) -> None:
        self._used = {k - windows: n for k, n in self._used.items() if k - windows >= 0}

    def _window_of(self, at: float) -> int:
        if at < self._reset or self._window is None:
            return 0
        return math.floor((at - self._reset) / self._window) + 1

    def _earliest_slot(self, now: float) -> tuple[float, bool]:
        at = max(now, self._last_send, self._refused_until)
        while True:
            cap_free_at = self._cap_free_at(at)
            if cap_free_at > at:
                at = cap_free_at
                continue
            if not self._known:
                return at, True
            window = self._window_of(at)
            end = self._reset + window * (self._window or 0.0)
            margin = self._margin()
            if at < end - margin and self._used.get(window, 0) < self._limit:
                return at, True
            if self._window is None:
                # Past this reset nothing is known yet: wait for it, then probe the new window.
                return max(at, self._reset + margin), False
            at = end + margin

    def _margin(self) -> float:
        # Never a large part of a window, so that every window keeps room for sends.
        return _RESET_MARGIN_SECONDS if self._window is None else min(_RESET_MARGIN_SECONDS, self._window / 4)

    def _cap_free_at(self, at: float) -> float:
        # Counts without forgetting: a reservation that ends unclaimed or refused (max_wait) must
        # leave every send of the last minute for the next one, which may be asked for an earlier time.
        recent = sum(1 for sent in self._sends if sent > at - 60.0)
        if recent < self.max_requests_per_minute:
            return at
        return self._sends[-self.max_requests_per_minute] + 60.0

    def _claim(self, at: float) -> None:
        self._sends.append(at)
        self._last_send = at
        if self._known:
            window = self._window_of(at)
            self._used[window] = self._used.get(window, 0) + 1


_BUDGETS: dict[str, AccountBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def budget_key(base_url: str, credential: str) -> str:
    """Key of an account's budget; a digest, so the registry never holds the credential itself."""
    return hashlib.sha256(f"{base_url}\0{credential}".encode()).hexdigest()


def budget_for(key: str, max_requests_per_minute: int) -> AccountBudget:
    """
    The process-wide budget for the account behind ``key``.

    When connections to one account set different caps, the lowest one holds for all of them.

    :param key: from :func:`budget_key`.
    :param max_requests_per_minute: this connection's client-side cap.
    """
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = AccountBudget(max_requests_per_minute)
        elif 1 <= max_requests_per_minute < budget.max_requests_per_minute:
            budget.max_requests_per_minute = max_requests_per_minute
        return budget


def forget_budgets() -> None:
    """Drop every process-wide budget (for tests that start a fresh account)."""
    with _BUDGETS_LOCK:
        _BUDGETS.clear()
