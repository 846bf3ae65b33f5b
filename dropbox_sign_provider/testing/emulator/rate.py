"""
The account's rate-limit windows: one budget shared by every key and token, in windows aligned to
multiples of their length on the epoch clock, as the ``X-Ratelimit-Reset`` header shows them.
"""

from __future__ import annotations

import math

from dropbox_sign_provider.testing.emulator import clock


class RateWindow:
    """
    The current window and what it has spent. Not thread-safe: the emulator's lock guards it.

    The limit and the window's length are passed to each call, not kept: they are the emulator's
    ``rate_limit`` and ``window_seconds``, plain attributes a test may change at any time.
    """

    def __init__(self) -> None:
        self.index = -1
        self.used = 0

    def current(self, seconds: float) -> tuple[int, int]:
        """Roll the window over if its time has passed; return (used, reset epoch second)."""
        index = math.floor(clock.now() / seconds)
        if index != self.index:
            self.index, self.used = index, 0
        reset = math.ceil(round((index + 1) * seconds, 6))
        return self.used, reset

    def peek(self, limit: int, seconds: float) -> dict[str, str]:
        """The rate-limit headers of an answer that spends nothing (401, 429, injected faults)."""
        return headers(limit, *self.current(seconds))

    def consume(self, limit: int, seconds: float) -> dict[str, str] | None:
        """Spend one request of the budget and return the headers, or ``None`` when it is exhausted."""
        used, reset = self.current(seconds)
        if used >= limit:
            return None
        self.used += 1
        return headers(limit, used + 1, reset)


def headers(limit: int, used: int, reset: int) -> dict[str, str]:
    """The three rate-limit headers, as the API sends them (the reset header's odd case included)."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - used)),
        "X-Ratelimit-Reset": str(reset),
    }
