"""
How failed calls to Dropbox Sign are retried: one :class:`RetryPolicy` for the sync and the async
hook, a value testable on its own.

It decides *whether* and *how long* to wait after a failed attempt: the server's reset time for
429s, exponential backoff with jitter for 5xx, dropped connections and unreadable answers, and
never for other 4xx. *When* a request may be sent at all is the account budget's to decide
(:mod:`dropbox_sign_provider.hooks.budget`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dropbox_sign_provider.exceptions import (
    DropboxSignError,
    DropboxSignRateLimitError,
)
from dropbox_sign_provider.hooks.rate_limit_headers import _RESET_MARGIN_SECONDS, DEFAULT_WINDOW_SECONDS

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
        """
        Only failures that say nothing about the request itself are worth another attempt: each
        error type says whether it is one (:attr:`DropboxSignError.retryable`).
        """
        return error.retryable

    def retry_delay(
        self,
        retries_done: int,
        error: DropboxSignError,
        rng: random.Random,
        rate_limited_for: float = 0.0,
    ) -> float | None:
        """
        Seconds to wait before retrying after ``error``, or ``None`` to give up and raise it.

        A 429 that told when the account may send again (its reset or ``Retry-After``) waits only
        a small jitter here: the account budget, which has seen the same answer, holds the next
        send back until then. A 429 that told nothing (a proxy stripped the headers) spreads the
        retries left over what remains of one window, so the call never gives up while the limit
        may still be in force.

        :param retries_done: retries already made for this call.
        :param error: the failure of the last attempt.
        :param rng: random source of the jitter.
        :param rate_limited_for: seconds since this call's first 429.
        """
        if retries_done >= self.max_retries or not self.is_retryable(error):
            return None
        if isinstance(error, DropboxSignRateLimitError):
            # A reset this clock already sees as past (the clocks differ) gives the budget nothing
            # to hold the next send back for: back off instead of retrying at once.
            if (error.retry_after or 0.0) > _RESET_MARGIN_SECONDS:
                return rng.uniform(0, _RESET_JITTER_SECONDS)
            window_left = max(0.0, DEFAULT_WINDOW_SECONDS - rate_limited_for)
            spread = window_left / (self.max_retries - retries_done)
            return max(self.backoff(retries_done, rng), spread + rng.uniform(0, _RESET_JITTER_SECONDS))
        return self.backoff(retries_done, rng)

    def backoff(self, retries_done: int, rng: random.Random) -> float:
        """
        Exponential backoff with jitter: a random delay between half the ceiling and the ceiling,
        so clients that failed together do not retry together.
        """
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**retries_done)
        return rng.uniform(ceiling / 2, ceiling)
