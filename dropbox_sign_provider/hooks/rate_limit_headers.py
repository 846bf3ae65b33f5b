"""
What an answer says of the account's rate limit: its ``X-RateLimit-*`` headers
(:class:`RateLimitHeaders`), its ``Retry-After`` (:func:`retry_after_seconds`) and how far the
server's clock is from ours (:func:`server_clock_skew`).

Rate-limit headers are evidence, not orders: a reset time is read against the server's clock
(its ``Date`` header) when the two clocks differ, and a value that cannot be a reset time
(milliseconds, more than one window ahead or behind, negative) is treated like a missing header,
so no answer can make the account wait longer than one window.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

#: Dropbox Sign's documented window for its per-minute limits.
DEFAULT_WINDOW_SECONDS = 60.0

# How far from now an announced reset may be, either way: one window and a little slack. Anything
# further (milliseconds, a clock an hour off with no Date header) cannot be this window's reset.
_RESET_SLACK_SECONDS = 5.0
_MAX_RESET_DISTANCE = DEFAULT_WINDOW_SECONDS + _RESET_SLACK_SECONDS
# The Date header has whole-second precision: closer clocks than this are taken as equal.
_CLOCK_SKEW_TOLERANCE = 2.0
# The reset header has whole-second precision, clocks differ a little and a request takes a moment
# to arrive: start a new window a moment after the announced reset rather than at it, and send
# nothing in the same moment before a reset, when the request could be counted in either window.
_RESET_MARGIN_SECONDS = 0.05


@dataclass(frozen=True)
class RateLimitHeaders:
    """The rate-limit state one answer announced."""

    limit: int
    remaining: int
    reset: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float | None = None) -> RateLimitHeaders | None:
        """
        Read ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-Ratelimit-Reset``.

        The reset is returned on this machine's clock: when the answer's ``Date`` says the server's
        clock differs from ours, the difference is taken off.

        :param headers: the answer's headers, looked up case-insensitively (the API spells the
            reset header with a lower-case ``l``).
        :param now: the current Unix time (``time.time()`` when omitted).
        :return: ``None`` when any of the three is missing or unreadable, or when the reset cannot
            be this window's: more than one window (and a little slack) away from now, either way.
        """
        now = time.time() if now is None else now
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            limit = int(lowered["x-ratelimit-limit"])
            remaining = int(lowered["x-ratelimit-remaining"])
            reset = float(lowered["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return None
        # A limit below 1 or a reset that is not a time would stall every caller of the account.
        if limit < 1 or not math.isfinite(reset) or reset <= 0:
            return None
        reset -= server_clock_skew(lowered.get("date"), now)
        if abs(reset - now) > _MAX_RESET_DISTANCE:
            return None
        return cls(limit=limit, remaining=min(max(remaining, 0), limit), reset=reset)


def server_clock_skew(date: str | None, now: float) -> float:
    """
    How far the server's clock is ahead of ours, from an answer's ``Date`` header; ``0`` without
    one, or when the two agree within the header's whole-second precision.

    :param date: the ``Date`` header (an HTTP date), or ``None``.
    :param now: the current Unix time here.
    """
    if not date:
        return 0.0
    try:
        # The server wrote the header somewhere within that second: take the middle of it.
        server_now = email.utils.parsedate_to_datetime(date).timestamp() + 0.5
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    skew = server_now - now
    return skew if abs(skew) > _CLOCK_SKEW_TOLERANCE and math.isfinite(skew) else 0.0


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """
    The wait an answer's ``Retry-After`` header asks for (seconds, or an HTTP date), when it is
    one a rate limit could mean: from 0 to one window and a little slack; ``None`` otherwise.

    :param headers: the answer's headers.
    :param now: the current Unix time (``time.time()`` when omitted).
    """
    now = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    value = (lowered.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds -= server_clock_skew(lowered.get("date"), now)
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_RESET_DISTANCE:
        return None
    return seconds
