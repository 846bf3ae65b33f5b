"""
Hooks for the Dropbox Sign API: :class:`DropboxSignHook` for tasks and :class:`DropboxSignAsyncHook`
for triggers.

Both read the same connection, pace every call with the same account budget and retry with the
same policy (:mod:`dropbox_sign_provider.hooks.policy`); they differ only in how they send and wait.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import random
import re
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import requests
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import BaseHook

from dropbox_sign_provider import DEFAULT_CONN_NAME, DEFAULT_HOST
from dropbox_sign_provider.exceptions import (
    DropboxSignConnectionError,
    DropboxSignError,
    DropboxSignRateLimitError,
    DropboxSignResponseError,
    error_from_response,
    parse_json_body,
)
from dropbox_sign_provider.hooks.policy import (
    DEFAULT_MAX_REQUESTS_PER_MINUTE,
    AccountBudget,
    RateLimitHeaders,
    RetryPolicy,
    budget_for,
    budget_key,
)
from dropbox_sign_provider.ids import validate_signature_request_id

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_PAGE_SIZE = 100


# --- the connection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiSettings:
    """
    Everything a hook needs from a ``dropbox_sign`` connection, checked once.

    :param conn_id: the connection's id.
    :param base_url: API base URL, ending in ``/v3``.
    :param authorization: value of the ``Authorization`` header (kept out of ``repr``).
    :param timeout: seconds allowed for every HTTP call.
    :param max_requests_per_minute: client-side budget of the account in this process.
    :param verify: TLS verification: ``True``, ``False`` or a CA bundle path.
    """

    conn_id: str
    base_url: str
    authorization: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_requests_per_minute: int = DEFAULT_MAX_REQUESTS_PER_MINUTE
    verify: bool | str = True

    @property
    def budget(self) -> AccountBudget:
        """The account's process-wide budget."""
        return budget_for(budget_key(self.base_url, self.authorization), self.max_requests_per_minute)


def _extra(extra: Mapping[str, Any], name: str) -> Any:
    # Older connection forms stored custom fields as ``extra__<conn_type>__<name>``.
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__dropbox_sign__{name}")
    return None if value == "" else value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


_USERINFO = re.compile(r"^([^/@]*://)?[^/@]*@")


def _without_userinfo(host: str) -> str:
    # A password typed into the host must not reach the error that refuses it.
    return _USERINFO.sub(r"\1***@", host)


def settings_from_connection(conn: Connection) -> ApiSettings:
    """
    Read and check a ``dropbox_sign`` connection.

    * ``password``: the API key (sent as HTTP Basic ``key:``); or extra ``access_token`` (sent as
      Bearer). Exactly one of the two.
    * ``host``: default ``https://api.hellosign.com``; ``/v3`` is added when missing. Plain
      ``http://`` is refused for anything but a loopback address unless extra
      ``allow_insecure_http`` is true: the key would cross the network in clear.
    * extra ``max_requests_per_minute`` (default 100), ``timeout`` (seconds, default 30),
      ``verify`` (TLS verification, default true; or a CA bundle path).

    :param conn: the Airflow connection.
    :raises ValueError: naming the connection id and the bad field (never a secret's value).
    """
    conn_id = conn.conn_id
    extra = conn.extra_dejson or {}
    api_key = (conn.password or "").strip()
    token = str(_extra(extra, "access_token") or "").strip()
    if api_key and token:
        raise ValueError(
            f"Connection {conn_id!r} has both an API key (password) and an access_token; set only one"
        )
    if not api_key and not token:
        raise ValueError(
            f"Connection {conn_id!r} has no credentials: set the API key as the password, or the "
            "access_token extra for OAuth"
        )
    if api_key:
        authorization = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
    else:
        authorization = f"Bearer {token}"

    host = (conn.host or "").strip() or DEFAULT_HOST
    base_url = host if "://" in host else f"https://{host}"
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number or out of range
        parts, port = urlsplit(""), -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port == -1
        or " " in base_url
        or not base_url.isprintable()
        # A query or fragment would end up in the middle of every URL; a user name and password
        # would be sent in place of the connection's credentials.
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise ValueError(
            f"Connection {conn_id!r} has host {_without_userinfo(conn.host or '')!r}, which is not an "
            f"http(s) URL such as {DEFAULT_HOST!r}"
        )
    if conn.port and not parts.port:
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        base_url = f"{parts.scheme}://{hostname}:{conn.port}{parts.path}"
    if (
        parts.scheme == "http"
        and not _is_loopback(parts.hostname)
        and not _as_bool(_extra(extra, "allow_insecure_http"))
    ):
        raise ValueError(
            f"Connection {conn_id!r} uses plain http:// to {parts.hostname!r}, which would send the "
            "credentials in clear; use https://, or set the extra allow_insecure_http to true"
        )
    base_url = base_url.rstrip("/")
    if not base_url.endswith("/v3"):
        base_url += "/v3"

    return ApiSettings(
        conn_id=conn_id,
        base_url=base_url,
        authorization=authorization,
        timeout=_positive_number(conn_id, "timeout", _extra(extra, "timeout"), DEFAULT_TIMEOUT_SECONDS),
        max_requests_per_minute=_whole_number(
            conn_id,
            "max_requests_per_minute",
            _extra(extra, "max_requests_per_minute"),
            DEFAULT_MAX_REQUESTS_PER_MINUTE,
        ),
        verify=_verify(extra),
    )


def _positive_number(conn_id: str, name: str, value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(f"Connection {conn_id!r} has {name} {value!r}: expected a positive number")
    return number


def _whole_number(conn_id: str, name: str, value: Any, default: int) -> int:
    # int() of 0.5 is 0: a cap of no request at all, which stalls every caller of the account.
    number = _positive_number(conn_id, name, value, default)
    if number < 1 or number != int(number):
        raise ValueError(f"Connection {conn_id!r} has {name} {value!r}: expected a whole number of 1 or more")
    return int(number)


def _verify(extra: Mapping[str, Any]) -> bool | str:
    value = _extra(extra, "verify")
    if value is None:
        return True
    if isinstance(value, str) and value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
        return value  # a CA bundle path
    return _as_bool(value)


# --- one call: pacing, answer handling and retries, shared by both hooks -------------------------


class _Call:
    """
    The attempts of one API call. The hooks' send loops ask it how long to wait before each send
    and hand it each answer; it returns the parsed body, asks for a retry, or raises.
    """

    def __init__(
        self, settings: ApiSettings, policy: RetryPolicy, rng: random.Random, method: str, path: str
    ):
        self.method = method
        self.path = path
        self.url = settings.base_url + path
        self._budget = settings.budget
        self._policy = policy
        self._rng = rng
        self._retries = 0
        #: seconds to wait before the next attempt, set when an answer asks for a retry
        self.retry_in = 0.0
        #: why the last attempt is retried: status and ``error_name`` (never a header)
        self.retry_reason = ""

    def reserve(self) -> tuple[float, bool]:
        """Seconds to wait before sending, and whether the send is booked (else ask again)."""
        try:
            slot = self._budget.reserve(max_wait=self._policy.max_rate_limit_wait)
        except DropboxSignRateLimitError as refused:
            raise DropboxSignRateLimitError(
                refused.status_code,
                refused.error_name,
                refused.error_msg,
                method=self.method,
                path=self.path,
                retry_after=refused.retry_after,
            ) from None
        return slot.wait, slot.claimed

    def abandoned(self) -> None:
        """
        Handle a booked send given up before its answer (the task or trigger was cancelled or timed
        out): when it was the budget's probe, the next request may probe instead of waiting forever.
        """
        self._budget.observe(None, None)

    def answered(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        """Handle an answer: its JSON body, or ``None`` to retry after :attr:`retry_in`."""
        self._budget.observe(headers, status)
        if status < 400:
            try:
                return parse_json_body(status, body, method=self.method, path=self.path)
            except DropboxSignError as error:
                self._retry_or_raise(error)
                return None
        announced = RateLimitHeaders.from_headers(headers)
        retry_after = max(0.0, announced.reset - time.time()) if announced and status == 429 else None
        self._retry_or_raise(
            error_from_response(status, body, method=self.method, path=self.path, retry_after=retry_after)
        )
        return None

    def not_answered(self, reason: BaseException) -> None:
        """Handle a call that got no answer (connection refused or dropped, timeout)."""
        self._budget.observe(None, None)
        error = DropboxSignConnectionError(
            None, "connection_error", _describe(reason), method=self.method, path=self.path
        )
        try:
            self._retry_or_raise(error)
        except DropboxSignConnectionError as raised:
            raise raised from reason

    def _retry_or_raise(self, error: DropboxSignError) -> None:
        delay = self._policy.retry_delay(self._retries, error, self._rng)
        if delay is None:
            raise error
        self._retries += 1
        self.retry_in = delay
        self.retry_reason = f"{error.status_code or 'no answer'} {error.error_name}"


_RAW_CALLS_REFUSED = (
    "raw HTTP calls would bypass the account's rate-limit budget and the id checks; use "
    "get_signature_request(), cancel_signature_request(), list_signature_requests() or get_account()"
)


def _secrets_of(settings: ApiSettings) -> tuple[str, ...]:
    # The whole header and the credential in it: a log line may hold either (Airflow already masks
    # the connection's password and access_token as it reads them).
    return settings.authorization, settings.authorization.split(" ", 1)[1]


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


def _retry_policy(
    max_retries: int, max_rate_limit_wait: float | None, retry_policy: RetryPolicy | None
) -> RetryPolicy:
    if retry_policy is not None:
        return retry_policy
    return RetryPolicy(max_retries=max_retries, max_rate_limit_wait=max_rate_limit_wait)


# --- the sync hook ------------------------------------------------------------------------------


class DropboxSignHook(HttpHook):
    """
    Talk to the Dropbox Sign API from a task.

    Every call waits for room in the account's rate limit (shared by all hooks of this process that
    use the same credentials and learnt from the API's ``X-RateLimit-*`` headers), is retried on
    429, 5xx and connection errors, and raises a typed
    :class:`~dropbox_sign_provider.exceptions.DropboxSignError` otherwise.

    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection to use.
    :param max_retries: retries of one call after its first attempt.
    :param max_rate_limit_wait: longest wait in seconds for the rate limit before giving up with
        :class:`~dropbox_sign_provider.exceptions.DropboxSignRateLimitError`.
    :param retry_policy: the whole retry policy, backoff included; when given, it replaces
        ``max_retries`` and ``max_rate_limit_wait``.
    """

    conn_name_attr = "dropbox_sign_conn_id"
    default_conn_name = DEFAULT_CONN_NAME
    conn_type = "dropbox_sign"
    hook_name = "Dropbox Sign"
    default_host = DEFAULT_HOST

    def __init__(
        self,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        max_retries: int = 5,
        max_rate_limit_wait: float | None = 120.0,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=dropbox_sign_conn_id)
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.retry_policy = _retry_policy(max_retries, max_rate_limit_wait, retry_policy)
        self._settings: ApiSettings | None = None
        self._session: requests.Session | None = None
        self._rng = random.Random()

    @property
    def settings(self) -> ApiSettings:
        """The connection's checked settings, read once per hook."""
        if self._settings is None:
            conn = self.get_connection(self.dropbox_sign_conn_id)
            self._settings = settings_from_connection(conn)
            from airflow.sdk.log import mask_secret

            for secret in _secrets_of(self._settings):
                mask_secret(secret)
        return self._settings

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """
        A :class:`requests.Session` authenticated for the connection, reused by this hook.

        Unlike the HTTP provider's, the connection's extra is never turned into request headers:
        it holds the access token.
        """
        if self._session is None:
            settings = self.settings
            self.base_url = settings.base_url
            session = requests.Session()
            session.headers["Authorization"] = settings.authorization
            session.headers["Accept"] = "application/json"
            session.verify = settings.verify
            self._session = self._configure_session_from_mount_adapters(session)
        if headers:
            self._session.headers.update(headers)
        return self._session

    def _request(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        session = self.get_conn()
        call = _Call(self.settings, self.retry_policy, self._rng, method, path)
        while True:
            wait, claimed = call.reserve()
            if not claimed:
                time.sleep(wait)
                continue
            try:
                if wait > 0:
                    time.sleep(wait)
                response = session.request(method, call.url, params=params, timeout=self.settings.timeout)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                call.not_answered(exc)
            except BaseException:
                call.abandoned()
                raise
            else:
                result = call.answered(response.status_code, response.headers, response.content)
                if result is not None:
                    return result
            self.log.warning(
                "Dropbox Sign %s %s failed (%s); retrying in %.1f s",
                method,
                path,
                call.retry_reason,
                call.retry_in,
            )
            time.sleep(call.retry_in)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """
        Not available, nor are ``run_and_check`` and ``run_with_advanced_retry``: a raw call would
        bypass the account's rate-limit budget and the id checks.

        :raises NotImplementedError: always; use the typed methods (``get_signature_request``,
            ``cancel_signature_request``, ``list_signature_requests``, ``get_account``).
        """
        raise NotImplementedError(_RAW_CALLS_REFUSED)

    def run_and_check(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: see :meth:`run`."""
        raise NotImplementedError(_RAW_CALLS_REFUSED)

    def run_with_advanced_retry(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: see :meth:`run`."""
        raise NotImplementedError(_RAW_CALLS_REFUSED)

    def get_account(self) -> dict[str, Any]:
        """The account the credentials belong to (``GET /account``): a cheap proof that they work."""
        return _member(self._request("GET", "/account"), "account", "GET", "/account")

    def get_signature_request(self, signature_request_id: str) -> dict[str, Any]:
        """
        One signature request (``GET /signature_request/{id}``).

        :param signature_request_id: the request's id.
        :return: the inner ``signature_request`` object.
        :raises DropboxSignDeletedError: once the request has been cancelled.
        """
        path = signature_request_path(None, signature_request_id)
        return _member(self._request("GET", path), "signature_request", "GET", path)

    def cancel_signature_request(self, signature_request_id: str) -> None:
        """
        Queue the cancellation of an incomplete signature request (``POST /signature_request/cancel/{id}``).

        Irreversible. The 200 answer only means "queued": the cancellation is confirmed once
        :meth:`get_signature_request` raises
        :class:`~dropbox_sign_provider.exceptions.DropboxSignDeletedError`.

        :param signature_request_id: the request's id.
        """
        self._request("POST", signature_request_path("cancel", signature_request_id))

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
        """Check the credentials with ``GET /account``, as the UI's Test button does."""
        try:
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


class DropboxSignAsyncHook(BaseHook):
    """
    Talk to the Dropbox Sign API from a trigger, with the same connection, budget and retry policy
    as :class:`DropboxSignHook`.

    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection to use.
    :param max_retries: retries of one call after its first attempt.
    :param max_rate_limit_wait: longest wait in seconds for the rate limit; ``None`` waits as long
        as it takes (a trigger has its own deadline).
    :param retry_policy: the whole retry policy, backoff included; when given, it replaces
        ``max_retries`` and ``max_rate_limit_wait``.
    """

    conn_name_attr = "dropbox_sign_conn_id"
    default_conn_name = DEFAULT_CONN_NAME
    conn_type = "dropbox_sign"
    hook_name = "Dropbox Sign"

    def __init__(
        self,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        max_retries: int = 5,
        max_rate_limit_wait: float | None = 120.0,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.retry_policy = _retry_policy(max_retries, max_rate_limit_wait, retry_policy)
        self._settings: ApiSettings | None = None
        self._rng = random.Random()

    async def get_settings(self) -> ApiSettings:
        """The connection's checked settings, read once per hook."""
        if self._settings is None:
            from airflow.providers.common.compat.connection import get_async_connection

            from dropbox_sign_provider.version_compat import amask_secret

            conn = await get_async_connection(conn_id=self.dropbox_sign_conn_id, hook=self)
            settings = settings_from_connection(conn)
            for secret in _secrets_of(settings):
                await amask_secret(secret)
            self._settings = settings
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

    async def _request(
        self, method: str, path: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        session = await self.get_session()
        call = _Call(await self.get_settings(), self.retry_policy, self._rng, method, path)
        while True:
            wait, claimed = call.reserve()
            if not claimed:
                await asyncio.sleep(wait)
                continue
            try:
                if wait > 0:
                    await asyncio.sleep(wait)
                async with session.request(method, call.url, params=params) as response:
                    body = await response.read()
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                call.not_answered(exc)
            except BaseException:  # cancelled (the trigger was stopped): do not hold up the budget's probe
                call.abandoned()
                raise
            else:
                result = call.answered(response.status, response.headers, body)
                if result is not None:
                    return result
            self.log.warning(
                "Dropbox Sign %s %s failed (%s); retrying in %.1f s",
                method,
                path,
                call.retry_reason,
                call.retry_in,
            )
            await asyncio.sleep(call.retry_in)

    async def get_signature_request(self, signature_request_id: str) -> dict[str, Any]:
        """Async :meth:`DropboxSignHook.get_signature_request`."""
        path = signature_request_path(None, signature_request_id)
        return _member(await self._request("GET", path), "signature_request", "GET", path)

    async def cancel_signature_request(self, signature_request_id: str) -> None:
        """Async :meth:`DropboxSignHook.cancel_signature_request`."""
        await self._request("POST", signature_request_path("cancel", signature_request_id))
