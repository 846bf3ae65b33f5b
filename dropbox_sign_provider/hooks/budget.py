"""
When a request to Dropbox Sign may be sent: the :class:`AccountBudget` of each account, testable
on its own with an explicit ``now``.

Dropbox Sign's rate limit belongs to the account, not to a client, so one budget is shared by
every hook instance in a process that uses the same credentials (see :func:`budget_for` and
:func:`account_budget`). It combines the client-side cap (``max_requests_per_minute``) with what
the API said in its ``X-RateLimit-*`` headers
(:mod:`dropbox_sign_provider.hooks.rate_limit_headers`), and hands out send times window by
window, so a thousand waiting triggers queue for the budget instead of each spending it on its own
clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dropbox_sign_provider import DEFAULT_MAX_REQUESTS_PER_MINUTE
from dropbox_sign_provider.exceptions import DropboxSignRateLimitError
from dropbox_sign_provider.hooks.rate_limit_headers import (
    _RESET_MARGIN_SECONDS,
    RateLimitHeaders,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from dropbox_sign_provider.hooks.connection import ApiSettings

# While nothing is known of the account's remaining budget, one request goes first and the others
# wait for its answer, whose headers tell how much may follow. They are woken by that answer; this
# is only how often they look again in case it never comes (a call abandoned in another thread).
_PROBE_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Slot:
    """
    The answer of :meth:`AccountBudget.reserve`.

    :param wait: seconds to wait.
    :param claimed: whether a send was booked for the end of the wait; when not, ask again then.
    :param at: the Unix time of the booked send (when ``claimed``).
    :param awaits_probe: not claimed because the account's first request is out: ask again as
        soon as it is answered (:meth:`AccountBudget.wait_for_probe`), ``wait`` at the latest.
    :param held_by: what holds the send back, in words for the task log (one of the ``HELD_BY_*``
        texts); empty when nothing does.
    """

    wait: float
    claimed: bool
    at: float = 0.0
    awaits_probe: bool = False
    held_by: str = ""


# What can hold a send back, as the task log says it.
HELD_BY_WINDOW = "the account's rate-limit window as the API announced it ({limit} requests a window)"
HELD_BY_NEXT_WINDOW = "the account's next rate-limit window, as the API announced its reset"
HELD_BY_CAP = "the client-side cap (max_requests_per_minute={cap})"
HELD_BY_REFUSAL = "the reset (or Retry-After) a 429 answer announced"
HELD_BY_PROBE = "the account's first answer, which tells its rate limit"


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
        # Called once the probe is answered or given up, so that waiters ask again at once.
        self._probe_waiters: list[Callable[[], None]] = []
        # Answers came without the headers (a proxy strips them): probing would then send one
        # request at a time, each waiting for the last; the client-side cap paces alone instead.
        self._headers_absent = False
        # Nothing is sent before this time: set by a 429 whose reset the window model did not expect.
        self._refused_until = 0.0
        # What held the last booked send back: a send booked behind it waits for the same.
        self._last_held_by = ""

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
                return Slot(_PROBE_WAIT_SECONDS, claimed=False, awaits_probe=True, held_by=HELD_BY_PROBE)
            at, claimable, held_by = self._earliest_slot(now)
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
                self._claim(at, held_by)
            return Slot(wait, claimed=claimable, at=at, held_by=held_by)

    def earliest(self, now: float | None = None) -> tuple[float, str]:
        """
        When the next send could go out if it were asked for at ``now``, and what holds it back
        (empty when nothing does); nothing is claimed.

        :param now: the Unix time of the question (``time.time()`` when omitted).
        """
        now = time.time() if now is None else now
        with self._lock:
            self._roll(now)
            if not self._known and self._probe_in_flight and not self._headers_absent:
                return now, HELD_BY_PROBE
            at, _, held_by = self._earliest_slot(now)
            return at, held_by

    def release(self, at: float) -> None:
        """
        Give back a send booked for ``at`` that never went out (the caller was cancelled or timed
        out while waiting for it), so that it holds nobody else back.

        :param at: :attr:`Slot.at` of the booked send.
        """
        with self._lock:
            with_probe = self._probe_in_flight
            if at in self._sends:
                self._sends.remove(at)
                if self._known:
                    window = self._window_of(at)
                    if self._used.get(window, 0) > 0:
                        self._used[window] -= 1
            self._last_send = self._sends[-1] if self._sends else 0.0
            self._probe_in_flight = False
            waiters = self._take_probe_waiters() if with_probe else []
        for wake in waiters:
            wake()

    def wait_for_probe(self, timeout: float) -> None:
        """Block until the account's first request is answered or given up, ``timeout`` at most."""
        answered = threading.Event()
        if self._on_probe_answer(answered.set):
            answered.wait(timeout)

    async def await_probe(self, timeout: float) -> None:
        """Async :meth:`wait_for_probe`: one wake-up per waiter, no polling on the event loop."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not answered.done():
                answered.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(settle)

        if self._on_probe_answer(wake):
            # On timeout wait_for cancels the future, which a late wake-up then leaves alone.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(answered, timeout)

    def _on_probe_answer(self, wake: Callable[[], None]) -> bool:
        with self._lock:
            if not self._probe_in_flight:
                return False
            self._probe_waiters.append(wake)
            return True

    def _take_probe_waiters(self) -> list[Callable[[], None]]:
        waiters, self._probe_waiters = self._probe_waiters, []
        return waiters

    def observe(
        self, headers: Mapping[str, str] | None, status_code: int | None, now: float | None = None
    ) -> float | None:
        """
        Learn from an answer (or from its absence, with ``headers=None``).

        :param headers: the answer's headers.
        :param status_code: the answer's status; a 429 means the current window is spent.
        :param now: the current Unix time.
        :return: for a 429, seconds until the account may send again as the answer told (its
            reset, else its ``Retry-After``); ``None`` when it told nothing usable.
        """
        now = time.time() if now is None else now
        announced = RateLimitHeaders.from_headers(headers, now) if headers is not None else None
        retry_after = (
            retry_after_seconds(headers, now) if headers is not None and status_code == 429 else None
        )
        with self._lock:
            waiters = self._take_probe_waiters() if self._probe_in_flight else []
            self._probe_in_flight = False
            self._learn(announced, headers, status_code, now, retry_after)
        for wake in waiters:
            wake()
        if status_code != 429:
            return None
        if announced is not None and announced.reset > now:
            return announced.reset - now
        return retry_after

    def _learn(
        self,
        announced: RateLimitHeaders | None,
        headers: Mapping[str, str] | None,
        status_code: int | None,
        now: float,
        retry_after: float | None,
    ) -> None:
        if announced is None:
            self._headers_absent = self._headers_absent or headers is not None
            if retry_after is not None:
                # A proxy kept Retry-After but not the rate-limit headers: hold every send until then.
                self._refused_until = max(self._refused_until, now + retry_after)
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

    def _earliest_slot(self, now: float) -> tuple[float, bool, str]:
        at = max(now, self._last_send, self._refused_until)
        held_by = ""
        if at > now:
            # Behind sends booked earlier, this one waits for what held them back.
            held_by = HELD_BY_REFUSAL if at == self._refused_until else self._last_held_by
        while True:
            cap_free_at = self._cap_free_at(at)
            if cap_free_at > at:
                at, held_by = cap_free_at, HELD_BY_CAP.format(cap=self.max_requests_per_minute)
                continue
            if not self._known:
                return at, True, held_by
            window = self._window_of(at)
            end = self._reset + window * (self._window or 0.0)
            margin = self._margin()
            if at < end - margin and self._used.get(window, 0) < self._limit:
                return at, True, held_by
            if self._window is None:
                # Past this reset nothing is known yet: wait for it, then probe the new window.
                return max(at, self._reset + margin), False, HELD_BY_NEXT_WINDOW
            at, held_by = end + margin, HELD_BY_WINDOW.format(limit=self._limit)

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

    def _claim(self, at: float, held_by: str) -> None:
        self._sends.append(at)
        self._last_send = at
        self._last_held_by = held_by
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


def account_budget(settings: ApiSettings) -> AccountBudget:
    """
    The process-wide budget of the account behind ``settings``, shared by every hook of this
    process that uses the same credentials; the lowest ``max_requests_per_minute`` of their
    connections holds for all of them.
    """
    return budget_for(budget_key(settings.base_url, settings.credential), settings.max_requests_per_minute)


def forget_budgets() -> None:
    """Drop every process-wide budget (for tests that start a fresh account)."""
    with _BUDGETS_LOCK:
        _BUDGETS.clear()
