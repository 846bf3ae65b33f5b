"""
One API call, shared by both hooks: :class:`_Call` paces each attempt with the account's budget
(:mod:`dropbox_sign_provider.hooks.budget`), reads each answer, and retries or raises by the
retry policy (:mod:`dropbox_sign_provider.hooks.policy`).

It sends nothing and sleeps on no clock of its own: each hook's send loop sends
(:mod:`dropbox_sign_provider.hooks.transport`) and waits, in a thread or on the event loop, and
hands it what happened.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from dropbox_sign_provider.cancellation.outcomes import Logger
from dropbox_sign_provider.exceptions import (
    DropboxSignDeadlineError,
    DropboxSignError,
    DropboxSignRateLimitError,
    DropboxSignResponseTooLargeError,
    error_from_response,
    parse_json_body,
)
from dropbox_sign_provider.hooks.budget import Slot, account_budget
from dropbox_sign_provider.hooks.connection import ApiSettings
from dropbox_sign_provider.hooks.policy import RetryPolicy

#: The largest answer body read: Dropbox Sign's answers here are a few kilobytes (a full list page
#: of 100 requests stays well below 1 MiB); anything near this is not its API answering.
MAX_RESPONSE_BYTES = 10 * 2**20
#: A wait for the rate limit longer than this many seconds is logged at INFO, with its cause and end.
LOG_WAITS_LONGER_THAN = 1.0


class _Call:
    """
    The attempts of one API call. The hooks' send loops ask it how long to wait before each send
    and hand it each answer; it returns the parsed body, asks for a retry, or raises. It logs
    every wait longer than :data:`LOG_WAITS_LONGER_THAN`, so the numbers in a task log add up.
    """

    def __init__(
        self,
        settings: ApiSettings,
        policy: RetryPolicy,
        rng: random.Random,
        method: str,
        path: str,
        deadline: float | None,
        log: Logger,
    ):
        self._log = log
        # The end of the last wait already logged (a retry's line counts the budget's wait too).
        self._logged_until = 0.0
        # When the wait for the account's first answer began, and whether it was logged.
        self._probe_wait_since: float | None = None
        self.method = method
        self.path = path
        self.url = settings.base_url + path
        self._budget = account_budget(settings)
        self._policy = policy
        self._rng = rng
        self._retries = 0
        # The last answer of the budget, and whether its booked send has gone out.
        self._slot = Slot(0.0, claimed=False)
        self._sending = False
        self._rate_limited_since: float | None = None
        #: Unix time after which nothing is sent (``None``: no deadline)
        self.deadline = deadline
        #: seconds to wait before the next attempt, set when an answer asks for a retry
        self.retry_in = 0.0
        #: why the last attempt is retried: status and ``error_name`` (never a header)
        self.retry_reason = ""
        #: the OAuth access token the next attempt is sent with (an API app's connection only)
        self.access_token: str | None = None
        self._may_reauthorize = settings.oauth is not None

    def reserve(self) -> tuple[float, bool]:
        """
        Seconds to wait before sending, and whether the send is booked (else ask again).

        :raises DropboxSignDeadlineError: when the send could not go out before the deadline.
        :raises DropboxSignRateLimitError: when it would wait longer than the policy allows.
        """
        max_wait = self._policy.max_rate_limit_wait
        left = self._time_left()
        if left is not None:
            max_wait = left if max_wait is None else min(max_wait, left)
        try:
            slot = self._budget.reserve(max_wait=max_wait)
        except DropboxSignRateLimitError as refused:
            if left is not None and max_wait == left:
                raise self._past_deadline(
                    f"the account's rate limit leaves no room for {left:.1f} s"
                ) from None
            raise DropboxSignRateLimitError(
                refused.status_code,
                refused.error_name,
                refused.error_msg,
                method=self.method,
                path=self.path,
                retry_after=refused.retry_after,
            ) from None
        self._slot, self._sending = slot, False
        self._log_wait(slot)
        return slot.wait, slot.claimed

    def _log_wait(self, slot: Slot) -> None:
        now = time.time()
        if slot.awaits_probe:
            # Asked again every second until the first answer comes: logged once, when it lasts.
            if self._probe_wait_since is None:
                self._probe_wait_since = now
            elif now - self._probe_wait_since > LOG_WAITS_LONGER_THAN and self._logged_until < now:
                self._logged_until = float("inf")
                self._log.info(
                    "Dropbox Sign %s %s: waiting for %s (%.1f s so far); it ends when that answer comes",
                    self.method,
                    self.path,
                    slot.held_by,
                    now - self._probe_wait_since,
                )
            return
        self._probe_wait_since = None
        until = now + slot.wait
        if slot.wait > LOG_WAITS_LONGER_THAN and until > self._logged_until + LOG_WAITS_LONGER_THAN:
            self._logged_until = until
            self._log.info(
                "Dropbox Sign %s %s: waiting %.1f s for %s, until %s",
                self.method,
                self.path,
                slot.wait,
                slot.held_by or "the account's rate limit",
                _utc(until),
            )

    def idle(self, sleep: Callable[[float], None]) -> None:
        """
        Wait, in a thread, until the budget may have room (after an unclaimed :meth:`reserve`).

        :param sleep: how the sync hook sleeps (:func:`time.sleep`).
        """
        if self._slot.awaits_probe:
            self._budget.wait_for_probe(self._slot.wait)
        else:
            sleep(self._slot.wait)

    async def aidle(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        """
        Async :meth:`idle`, for the event loop.

        :param sleep: how the async hook sleeps (:func:`asyncio.sleep`).
        """
        if self._slot.awaits_probe:
            await self._budget.await_probe(self._slot.wait)
        else:
            await sleep(self._slot.wait)

    def check_deadline(self) -> None:
        """
        Called right before the request goes out: past the deadline, it is not sent.

        :raises DropboxSignDeadlineError: when the deadline has passed (the send loop then gives
            up the booked send, as for any call abandoned before its answer).
        """
        left = self._time_left()
        if left is not None and left <= 0:
            raise self._past_deadline("the deadline passed while it waited")
        self._sending = True

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    def _past_deadline(self, why: str) -> DropboxSignDeadlineError:
        return DropboxSignDeadlineError(
            None,
            "deadline_passed",
            f"not sent: {why}, past its deadline",
            method=self.method,
            path=self.path,
        )

    def abandoned(self) -> None:
        """
        Handle a booked send given up before its answer (the task or trigger was cancelled or timed
        out, or the deadline passed): a send that never went out is given back to the budget, and
        when it was the budget's probe, the next request may probe instead of waiting forever.
        """
        if self._slot.claimed and not self._sending:
            self._budget.release(self._slot.at)
        else:
            self._budget.observe(None, None)

    def answered(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        """
        Handle an answer: its JSON body, or ``None`` to retry after :attr:`retry_in`.

        :param body: the body as read, which stops one piece past :data:`MAX_RESPONSE_BYTES`.
        """
        held_for = self._budget.observe(headers, status)
        if len(body) > MAX_RESPONSE_BYTES:
            self._retry_or_raise(
                DropboxSignResponseTooLargeError(
                    status,
                    "response_too_large",
                    f"the answer's body is larger than {MAX_RESPONSE_BYTES} bytes, so it is not an "
                    "answer of Dropbox Sign's API; check the connection's host",
                    method=self.method,
                    path=self.path,
                )
            )
            return None
        if 200 <= status < 300:
            try:
                return parse_json_body(status, body, method=self.method, path=self.path)
            except DropboxSignError as error:
                self._retry_or_raise(error)
                return None
        refused = error_from_response(
            status,
            body,
            method=self.method,
            path=self.path,
            retry_after=held_for,
            location=headers.get("Location"),
        )
        if isinstance(refused, DropboxSignRateLimitError) and self._rate_limited_since is None:
            self._rate_limited_since = time.time()
        self._retry_or_raise(refused)
        return None

    def reauthorize(self) -> bool:
        """
        After a 401: whether to refresh the access token and send once more (``True`` once per
        call, for an API app's connection: its token may have expired or been replaced early).
        """
        allowed, self._may_reauthorize = self._may_reauthorize, False
        return allowed

    def failed(self, failure: BaseException) -> None:
        """
        Handle a send that raised: a typed error (no answer, or never sent) is retried or raised;
        anything else (the task or trigger was cancelled or timed out) gives the booked send up and
        is raised again.
        """
        if not isinstance(failure, DropboxSignError):
            self.abandoned()
            raise failure
        self.not_answered(failure)

    def retry_wait(self) -> float:
        """
        Log why the call is retried and when it will be sent, and return the seconds to wait first.

        The logged delay is the real one: the retry's own delay, then whatever the account's budget
        will hold the send back for (after a 429, the retry waits a moment and the budget the rest).
        """
        now = time.time()
        at, held_by = self._budget.earliest(now + self.retry_in)
        held = at - (now + self.retry_in)
        why = f"{self.method} {self.path} failed ({self.retry_reason})"
        if held > _RETRY_LOG_PRECISION:
            self._logged_until = at
            self._log.warning(
                "Dropbox Sign %s; retrying in %.1f s (%.1f s back-off, then %.1f s for %s), at %s",
                why,
                self.retry_in + held,
                self.retry_in,
                held,
                held_by,
                _utc(at),
            )
        else:
            self._log.warning("Dropbox Sign %s; retrying in %.1f s", why, self.retry_in)
        return self.retry_in

    def not_answered(self, error: DropboxSignError) -> None:
        """
        Handle a call that got no answer: ``error`` is what the HTTP client's failure means (see
        :func:`~dropbox_sign_provider.hooks.transport._no_answer`), the client's own exception its
        ``__cause__``; or the call was never sent (:meth:`check_deadline`), and its booked send is
        given back.
        """
        self.abandoned()
        self._retry_or_raise(error)

    def _retry_or_raise(self, error: DropboxSignError) -> None:
        limited_for = 0.0 if self._rate_limited_since is None else time.time() - self._rate_limited_since
        delay = self._policy.retry_delay(self._retries, error, self._rng, limited_for)
        left = self._time_left()
        # A retry that would go out past the deadline is not made: the last failure is the news.
        if delay is None or (left is not None and delay >= left):
            raise error
        self._retries += 1
        self.retry_in = delay
        self.retry_reason = f"{error.status_code or 'no answer'} {error.error_name}"


# A budget's wait below this adds nothing a person reading the retry line needs to know.
_RETRY_LOG_PRECISION = 0.05


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%H:%M:%S UTC")
