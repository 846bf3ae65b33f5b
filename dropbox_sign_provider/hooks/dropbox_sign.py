"""
Hooks for the Dropbox Sign API: :class:`DropboxSignHook` for tasks and :class:`DropboxSignAsyncHook`
for triggers.

Both read the same connection (:mod:`dropbox_sign_provider.hooks.connection`), pace every call
with the same account budget (:mod:`dropbox_sign_provider.hooks.budget`) and retry with the same
policy (:mod:`dropbox_sign_provider.hooks.policy`); they differ only in how they send and wait.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import requests
from airflow.sdk import BaseHook

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.exceptions import (
    DropboxSignConnectionError,
    DropboxSignDeadlineError,
    DropboxSignError,
    DropboxSignRateLimitError,
    DropboxSignResponseError,
    DropboxSignResponseTooLargeError,
    DropboxSignTLSError,
    DropboxSignTransportError,
    error_from_response,
    parse_json_body,
)
from dropbox_sign_provider.hooks.budget import Slot, account_budget
from dropbox_sign_provider.hooks.connection import ApiSettings, _secrets_of, settings_from_connection
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.ids import validate_signature_request_id
from dropbox_sign_provider.outcomes import Logger

if TYPE_CHECKING:
    from airflow.sdk import Connection

MAX_PAGE_SIZE = 100
#: The largest answer body read: Dropbox Sign's answers here are a few kilobytes (a full list page
#: of 100 requests stays well below 1 MiB); anything near this is not its API answering.
MAX_RESPONSE_BYTES = 10 * 2**20
# Bodies are read in pieces of this size, so an oversized one is never held whole.
_CHUNK_BYTES = 64 * 2**10
#: A wait for the rate limit longer than this many seconds is logged at INFO, with its cause and end.
LOG_WAITS_LONGER_THAN = 1.0


#: A decoded JSON answer; the query parameters of a call; the Unix time after which it is not sent.
Json = dict[str, Any]
Query = Mapping[str, Any] | None
Deadline = float | None


# --- one call: pacing, answer handling and retries, shared by both hooks -------------------------


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

    def idle(self) -> None:
        """Wait, in a thread, until the budget may have room (after an unclaimed :meth:`reserve`)."""
        if self._slot.awaits_probe:
            self._budget.wait_for_probe(self._slot.wait)
        else:
            time.sleep(self._slot.wait)

    async def aidle(self) -> None:
        """Async :meth:`idle`, for the event loop."""
        if self._slot.awaits_probe:
            await self._budget.await_probe(self._slot.wait)
        else:
            await asyncio.sleep(self._slot.wait)

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
        if status == 429 and self._rate_limited_since is None:
            self._rate_limited_since = time.time()
        self._retry_or_raise(
            error_from_response(
                status,
                body,
                method=self.method,
                path=self.path,
                retry_after=held_for,
                location=headers.get("Location"),
            )
        )
        return None

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
        :meth:`no_answer`), the client's own exception its ``__cause__``; or the call was never
        sent (:meth:`check_deadline`), and its booked send is given back.
        """
        self.abandoned()
        self._retry_or_raise(error)

    def no_answer(self, reason: BaseException, transient: bool) -> DropboxSignError:
        """
        The typed error for an HTTP client's failure to get an answer.

        :param reason: the client's exception.
        :param transient: whether the client's failure is of a kind another attempt may not meet
            (connection refused or dropped, a timeout, a body cut short); TLS failures never are.
        """
        tls = _tls_failure(reason)
        if tls is not None:
            return DropboxSignTLSError(
                None,
                "tls_error",
                f"TLS handshake with {urlsplit(self.url).netloc} failed ({tls}): is the host an "
                "https:// server, and is the CA bundle (extra verify) right? A host without a scheme "
                "means https://",
                method=self.method,
                path=self.path,
            )
        if transient:
            return DropboxSignConnectionError(
                None, "connection_error", _describe(reason), method=self.method, path=self.path
            )
        return DropboxSignTransportError(
            None,
            "transport_error",
            f"{_describe(reason)}; not retried, as another attempt would fail the same way",
            method=self.method,
            path=self.path,
        )

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


def _tls_failure(reason: BaseException) -> str | None:
    # Clients wrap the ssl module's error (requests twice over): look along the chain for a TLS
    # failure, and describe it by the innermost error, the one that says what went wrong.
    tls, innermost = False, ""
    seen: BaseException | None = reason
    for _ in range(10):  # a chain is short; a loop in one must not hang the call
        if seen is None:
            break
        if isinstance(
            seen,
            ssl.SSLError
            | requests.exceptions.SSLError
            | aiohttp.ClientSSLError
            | aiohttp.ServerFingerprintMismatch,
        ):
            tls = True
            innermost = str(seen) if isinstance(seen, ssl.SSLError) else innermost
        seen = seen.__cause__ or seen.__context__
    return (innermost or _describe(reason)) if tls else None


def _read_up_to_cap(pieces: Iterable[bytes]) -> bytes:
    # One piece past the cap at most: enough for _Call.answered to see that the body is too large.
    body = bytearray()
    for piece in pieces:
        body += piece
        if len(body) > MAX_RESPONSE_BYTES:
            break
    return bytes(body)


# requests' failures that another attempt may not meet; any other is raised at once.
_REQUESTS_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


def _send_with_requests(
    session: requests.Session, call: _Call, params: Mapping[str, Any] | None, timeout: float
) -> tuple[int, Mapping[str, str], bytes]:
    """
    Send one attempt of ``call``: the answer's status, headers and body, or a typed error.

    Redirects are not followed: the one answer is the one the API (or whatever stands in front of
    it) gave to this very request.

    :raises DropboxSignError: what the client's failure means (:meth:`_Call.no_answer`).
    """
    try:
        with session.request(
            call.method, call.url, params=params, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            return (
                response.status_code,
                response.headers,
                _read_up_to_cap(response.iter_content(_CHUNK_BYTES)),
            )
    except requests.RequestException as exc:
        raise call.no_answer(exc, transient=isinstance(exc, _REQUESTS_TRANSIENT)) from exc


# aiohttp's failures that another attempt may not meet (a response it could not parse included, as
# requests counts that a connection error); any other is raised at once.
_AIOHTTP_TRANSIENT = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
    asyncio.TimeoutError,
    OSError,
)


async def _send_with_aiohttp(
    session: aiohttp.ClientSession, call: _Call, params: Mapping[str, Any] | None
) -> tuple[int, Mapping[str, str], bytes]:
    """Async :func:`_send_with_requests`, the timeout being the session's."""
    try:
        async with session.request(call.method, call.url, params=params, allow_redirects=False) as response:
            body = bytearray()
            while len(body) <= MAX_RESPONSE_BYTES:
                piece = await response.content.read(_CHUNK_BYTES)
                if not piece:
                    break
                body += piece
            return response.status, response.headers, bytes(body)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        transient = isinstance(exc, _AIOHTTP_TRANSIENT) and not isinstance(exc, aiohttp.TooManyRedirects)
        raise call.no_answer(exc, transient=transient) from exc


def _describe(reason: BaseException) -> str:
    # Exception texts of HTTP clients carry the URL, never headers; the type says what happened
    # when the text is empty (a dropped connection often has none).
    text = str(reason).strip()
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__


def _member(answer: Mapping[str, Any], name: str, method: str, path: str) -> dict[str, Any]:
    # An answer without the documented object must not read as an empty (so, pending) request.
    member = answer.get(name)
    if not isinstance(member, dict):
        raise DropboxSignResponseError(
            200, "invalid_response", f"the answer has no {name!r} object", method=method, path=path
        )
    return member


def signature_request_path(action: str | None, signature_request_id: Any) -> str:
    """
    The API path for a signature request, its id validated first.

    :param action: ``None`` for the request itself, else ``cancel`` or ``remove``.
    :param signature_request_id: the id; checked before it can reach a URL.
    """
    checked = validate_signature_request_id(signature_request_id)
    return f"/signature_request/{action}/{checked}" if action else f"/signature_request/{checked}"


def list_params(query: str | None, account_id: str | None, page_size: int, page: int) -> dict[str, Any]:
    """Query parameters of one page of ``/signature_request/list``."""
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size {page_size!r} must be an integer from 1 to {MAX_PAGE_SIZE}")
    params: dict[str, Any] = {"page": page, "page_size": page_size}
    if query:
        params["query"] = query
    if account_id:
        params["account_id"] = account_id
    return params


class _DropboxSignBaseHook(BaseHook):
    """
    What both hooks share: the connection, its settings checked once, the retry policy.

    A plain :class:`~airflow.sdk.BaseHook`, not the HTTP provider's ``HttpHook``: every call must go
    through the account's budget and the id checks, so none of ``HttpHook``'s raw calls could be
    offered, and its connection handling would turn the extra (which holds the access token) into
    headers.

    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection to use.
    :param retry_policy: how calls are retried and how long they may wait for the rate limit
        (default: :class:`~dropbox_sign_provider.hooks.policy.RetryPolicy` ``()``: 5 retries, at
        most 120 s of waiting for the rate limit).
    """

    conn_name_attr = "dropbox_sign_conn_id"
    default_conn_name = DEFAULT_CONN_NAME
    conn_type = "dropbox_sign"
    hook_name = "Dropbox Sign"

    def __init__(
        self, dropbox_sign_conn_id: str = DEFAULT_CONN_NAME, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__()
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.retry_policy = RetryPolicy() if retry_policy is None else retry_policy
        self._settings: ApiSettings | None = None
        self._rng = random.Random()

    def _check(self, conn: Connection, named: bool = True) -> tuple[ApiSettings, tuple[str, ...]]:
        """The connection's settings, remembered, and the secrets the caller must mask."""
        self._settings = settings_from_connection(conn, named=named)
        return self._settings, _secrets_of(self._settings)

    def _call(self, settings: ApiSettings, method: str, path: str, deadline: float | None) -> _Call:
        return _Call(settings, self.retry_policy, self._rng, method, path, deadline, self.log)


# --- the sync hook ------------------------------------------------------------------------------


class DropboxSignHook(_DropboxSignBaseHook):
    """
    Talk to the Dropbox Sign API from a task.

    Every call waits for room in the account's rate limit (shared by all hooks of this process that
    use the same credentials and learnt from the API's ``X-RateLimit-*`` headers), is retried on
    429, 5xx and connection errors, and raises a typed
    :class:`~dropbox_sign_provider.exceptions.DropboxSignError` otherwise.

    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection to use.
    :param retry_policy: how calls are retried and how long they may wait for the rate limit
        before giving up with :class:`~dropbox_sign_provider.exceptions.DropboxSignRateLimitError`
        (default: 5 retries, 120 s).
    """

    def __init__(
        self, dropbox_sign_conn_id: str = DEFAULT_CONN_NAME, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__(dropbox_sign_conn_id, retry_policy)
        self._session: requests.Session | None = None

    @property
    def settings(self) -> ApiSettings:
        """The connection's checked settings, read once per hook."""
        return self._read_settings(named=True)

    def _read_settings(self, named: bool) -> ApiSettings:
        if self._settings is None:
            from airflow.sdk.log import mask_secret

            settings, secrets = self._check(self.get_connection(self.dropbox_sign_conn_id), named)
            for secret in secrets:
                mask_secret(secret)
            return settings
        return self._settings

    def get_conn(self) -> requests.Session:
        """
        A :class:`requests.Session` authenticated for the connection, reused by this hook.

        The connection's extra is never turned into request headers: it holds the access token.
        """
        if self._session is None:
            settings = self.settings
            session = requests.Session()
            session.headers["Authorization"] = settings.authorization
            session.headers["Accept"] = "application/json"
            session.verify = settings.verify
            self._session = session
        return self._session

    def _request(self, method: str, path: str, params: Query = None, deadline: Deadline = None) -> Json:
        session = self.get_conn()
        call = self._call(self.settings, method, path, deadline)
        while True:
            wait, claimed = call.reserve()
            if not claimed:
                call.idle()
                continue
            try:
                if wait > 0:
                    time.sleep(wait)
                call.check_deadline()
                reply = _send_with_requests(session, call, params, self.settings.timeout)
            except BaseException as failure:
                call.failed(failure)
            else:
                if (result := call.answered(*reply)) is not None:
                    return result
            time.sleep(call.retry_wait())

    def get_account(self) -> dict[str, Any]:
        """The account the credentials belong to (``GET /account``): a cheap proof that they work."""
        return _member(self._request("GET", "/account"), "account", "GET", "/account")

    def get_signature_request(
        self, signature_request_id: str, *, deadline: float | None = None
    ) -> dict[str, Any]:
        """
        One signature request (``GET /signature_request/{id}``).

        :param signature_request_id: the request's id.
        :param deadline: Unix time after which the call is not sent, however long the rate limit
            or a retry would make it wait.
        :return: the inner ``signature_request`` object.
        :raises DropboxSignDeletedError: once the request has been cancelled.
        :raises DropboxSignDeadlineError: when the call could not go out before ``deadline``.
        """
        path = signature_request_path(None, signature_request_id)
        return _member(self._request("GET", path, deadline=deadline), "signature_request", "GET", path)

    def cancel_signature_request(self, signature_request_id: str, *, deadline: float | None = None) -> None:
        """
        Queue the cancellation of an incomplete signature request (``POST /signature_request/cancel/{id}``).

        Irreversible. The 200 answer only means "queued": the cancellation is confirmed once
        :meth:`get_signature_request` raises
        :class:`~dropbox_sign_provider.exceptions.DropboxSignDeletedError`.

        :param signature_request_id: the request's id.
        :param deadline: Unix time after which the cancel is not sent: the wait for the rate limit
            and for retries is bounded by the time left, and the deadline is checked again right
            before the request goes out.
        :raises DropboxSignDeadlineError: when the cancel could not go out before ``deadline``.
        """
        self._request("POST", signature_request_path("cancel", signature_request_id), deadline=deadline)

    def remove_signature_request_access(self, signature_request_id: str) -> None:
        """
        Remove your access to a completed signature request (``POST /signature_request/remove/{id}``).

        :param signature_request_id: the request's id.
        """
        self._request("POST", signature_request_path("remove", signature_request_id))

    def list_signature_requests(
        self, query: str | None = None, account_id: str | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """
        Every signature request matching ``query``, fetched page by page as the iterator is consumed.

        :param query: Dropbox Sign search syntax, for example ``complete:false AND title:NDA``.
        :param account_id: list another account's requests (team admins), or ``all``.
        :param page_size: requests per page, 1 to 100.
        """
        list_params(query, account_id, page_size, 1)  # fail on a bad page_size before the first call
        return self._pages(query, account_id, page_size)

    def _pages(self, query: str | None, account_id: str | None, page_size: int) -> Iterator[dict[str, Any]]:
        page, num_pages = 1, 1
        while page <= num_pages:
            answer = self._request(
                "GET", "/signature_request/list", list_params(query, account_id, page_size, page)
            )
            yield from answer.get("signature_requests") or []
            num_pages = int((answer.get("list_info") or {}).get("num_pages") or 0)
            page += 1

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the credentials with ``GET /account``, as the UI's Test button does.

        The Test button checks the form under a random, temporary connection id: problems are
        reported of "This connection", never of that id.
        """
        try:
            self._read_settings(named=False)
            account = self.get_account()
        except (DropboxSignError, ValueError) as exc:
            return False, str(exc)
        return True, f"Connected to Dropbox Sign account {account.get('email_address', '')}".strip()


# --- the async hook -----------------------------------------------------------------------------


# One aiohttp session per event loop and connection settings: a triggerer runs many triggers in one
# loop, and a session per trigger (or per call) would cost memory and connections for nothing.
@dataclass
class _SharedSession:
    session: aiohttp.ClientSession
    users: int = 0


_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ApiSettings, _SharedSession]] = (
    weakref.WeakKeyDictionary()
)


class DropboxSignAsyncHook(_DropboxSignBaseHook):
    """
    Talk to the Dropbox Sign API from a trigger, with the same connection, budget and retry policy
    as :class:`DropboxSignHook`.

    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection to use.
    :param retry_policy: how calls are retried and how long they may wait for the rate limit; a
        trigger, which has its own deadline, passes ``RetryPolicy(max_rate_limit_wait=None)``
        and a ``deadline`` with each call.
    """

    async def get_settings(self) -> ApiSettings:
        """The connection's checked settings, read once per hook."""
        if self._settings is None:
            from airflow.providers.common.compat.connection import get_async_connection

            from dropbox_sign_provider.version_compat import amask_secret

            conn = await get_async_connection(conn_id=self.dropbox_sign_conn_id, hook=self)
            settings, secrets = self._check(conn)
            for secret in secrets:
                await amask_secret(secret)
            return settings
        return self._settings

    async def get_session(self) -> aiohttp.ClientSession:
        """The session shared by every hook with these settings in the running event loop."""
        return (await self._shared()).session

    async def _shared(self) -> _SharedSession:
        settings = await self.get_settings()
        sessions = _SESSIONS.setdefault(asyncio.get_running_loop(), {})
        shared = sessions.get(settings)
        if shared is None or shared.session.closed:
            ssl: Any = True
            if isinstance(settings.verify, str):
                import ssl as ssl_module

                ssl = ssl_module.create_default_context(cafile=settings.verify)
            elif settings.verify is False:
                ssl = False
            shared = sessions[settings] = _SharedSession(
                aiohttp.ClientSession(
                    headers={"Authorization": settings.authorization, "Accept": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=settings.timeout),
                    connector=aiohttp.TCPConnector(ssl=ssl, limit=100),
                ),
                users=shared.users if shared else 0,
            )
        return shared

    async def __aenter__(self) -> DropboxSignAsyncHook:
        """Use the shared session; the last user to leave closes it."""
        (await self._shared()).users += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        shared = await self._shared()
        shared.users -= 1
        if shared.users <= 0:
            _SESSIONS.get(asyncio.get_running_loop(), {}).pop(await self.get_settings(), None)
            await shared.session.close()

    async def _request(self, method: str, path: str, params: Query = None, deadline: Deadline = None) -> Json:
        session = await self.get_session()
        call = self._call(await self.get_settings(), method, path, deadline)
        while True:
            wait, claimed = call.reserve()
            if not claimed:
                await call.aidle()
                continue
            try:
                if wait > 0:
                    await asyncio.sleep(wait)
                call.check_deadline()
                reply = await _send_with_aiohttp(session, call, params)
            except BaseException as failure:  # cancelled too: the trigger was stopped
                call.failed(failure)
            else:
                if (result := call.answered(*reply)) is not None:
                    return result
            await asyncio.sleep(call.retry_wait())

    async def get_signature_request(
        self, signature_request_id: str, *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Async :meth:`DropboxSignHook.get_signature_request`."""
        path = signature_request_path(None, signature_request_id)
        answer = await self._request("GET", path, deadline=deadline)
        return _member(answer, "signature_request", "GET", path)

    async def cancel_signature_request(
        self, signature_request_id: str, *, deadline: float | None = None
    ) -> None:
        """Async :meth:`DropboxSignHook.cancel_signature_request`."""
        await self._request("POST", signature_request_path("cancel", signature_request_id), deadline=deadline)
