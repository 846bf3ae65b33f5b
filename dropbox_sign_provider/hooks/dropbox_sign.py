"""
Hooks for the Dropbox Sign API: :class:`DropboxSignHook` for tasks and :class:`DropboxSignAsyncHook`
for triggers, and the API's endpoints they call.

Both read the same connection (:mod:`dropbox_sign_provider.hooks.connection`) and run every call
through the same core (:mod:`dropbox_sign_provider.hooks.call`), which paces it with the account's
budget and retries it by the same policy (:mod:`dropbox_sign_provider.hooks.policy`); they differ
only in how they send (:mod:`dropbox_sign_provider.hooks.transport`) and wait.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import requests
from airflow.sdk import BaseHook

from dropbox_sign_provider import CONN_TYPE, DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation.ids import validate_bulk_send_job_id, validate_signature_request_id
from dropbox_sign_provider.exceptions import (
    DropboxSignError,
    DropboxSignResponseError,
    DropboxSignUnauthorizedError,
)
from dropbox_sign_provider.hooks.call import _Call
from dropbox_sign_provider.hooks.connection import ApiSettings, _secrets_of, settings_from_connection
from dropbox_sign_provider.hooks.oauth import Refreshed, Retry, TokenKeeper, secrets_of, token_keeper
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.hooks.refresh_token_store import read_refresh_token, write_refresh_token
from dropbox_sign_provider.hooks.transport import (
    _refresh_with_aiohttp,
    _refresh_with_requests,
    _send_with_aiohttp,
    _send_with_requests,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

MAX_PAGE_SIZE = 100

#: A decoded JSON answer; the query parameters of a call; the Unix time after which it is not sent.
Json = dict[str, Any]
Query = Mapping[str, Any] | None
Deadline = float | None


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


def bulk_send_job_path(bulk_send_job_id: Any) -> str:
    """The API path of a bulk send job, its id validated first."""
    return f"/bulk_send_job/{validate_bulk_send_job_id(bulk_send_job_id)}"


def page_params(page_size: int, page: int) -> dict[str, Any]:
    """Query parameters of one page of a list call; ``page_size`` checked (1 to 100)."""
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size {page_size!r} must be an integer from 1 to {MAX_PAGE_SIZE}")
    return {"page": page, "page_size": page_size}


def page_items(answer: Mapping[str, Any], name: str, method: str, path: str) -> tuple[list[Any], int]:
    """
    The items of one page of a list call, and how many pages its ``list_info`` says there are.

    :raises DropboxSignResponseError: when the answer has no ``name`` list: a page without its
        list must not read as an empty one (so, as nothing left to cancel).
    """
    items = answer.get(name)
    if not isinstance(items, list):
        raise DropboxSignResponseError(
            200, "invalid_response", f"the answer has no {name!r} list", method=method, path=path
        )
    return items, int((answer.get("list_info") or {}).get("num_pages") or 0)


def list_params(query: str | None, account_id: str | None, page_size: int, page: int) -> dict[str, Any]:
    """Query parameters of one page of ``/signature_request/list``."""
    params = page_params(page_size, page)
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
    conn_type = CONN_TYPE
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

    def _keeper(self, settings: ApiSettings) -> TokenKeeper | None:
        """The access token keeper of an API app's connection (``None`` for a key or a fixed token)."""
        if settings.oauth is None:
            return None
        return token_keeper(settings.conn_id, settings.oauth, self.retry_policy)

    def _log_refresh(self, keeper: TokenKeeper, refreshed: Refreshed) -> None:
        self.log.info(
            "Dropbox Sign: connection %r refreshed its OAuth access token (%d refreshes in this process)%s",
            keeper.conn_id,
            keeper.refreshes,
            "; the refresh token was rotated" if refreshed.rotated else "",
        )

    def _untested_app(self, settings: ApiSettings) -> tuple[bool, str] | None:
        # A refresh may rotate the app's refresh token, and the Test button checks a form under a
        # temporary id: the rotated token would be kept for that id, and the saved connection's
        # refused wherever Dropbox Sign stops honouring the one it replaced.
        if settings.oauth is None:
            return None
        return False, (
            "This connection's API app fields are well-formed. It was not tested against Dropbox "
            "Sign: a refresh may rotate the app's refresh token. Run a task (or airflow connections "
            "test) with the saved connection to check it"
        )


# --- the sync hook ------------------------------------------------------------------------------


class DropboxSignHook(_DropboxSignBaseHook):
    """
    Talk to the Dropbox Sign API from a task.

    Every call waits for room in the account's rate limit (shared by all hooks of this process that
    use the same credentials and learnt from the API's ``X-RateLimit-*`` headers), is retried on
    429, 5xx and connection errors, and raises a typed
    :class:`~dropbox_sign_provider.exceptions.DropboxSignError` otherwise. On an API app's
    connection it goes out with an OAuth access token refreshed as it expires
    (:mod:`dropbox_sign_provider.hooks.oauth`), and is sent once more after a refresh on a 401.

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
            if settings.authorization:
                session.headers["Authorization"] = settings.authorization
            session.headers["Accept"] = "application/json"
            session.verify = settings.verify
            self._session = session
        return self._session

    def _request(self, method: str, path: str, params: Query = None, deadline: Deadline = None) -> Json:
        session = self.get_conn()
        call = self._call(self.settings, method, path, deadline)
        keeper = self._keeper(self.settings)
        while True:
            wait, claimed = call.reserve()
            if not claimed:
                call.idle(time.sleep)
                continue
            try:
                if wait > 0:
                    time.sleep(wait)
                if keeper is not None:
                    # After the wait for the rate limit, which may outlast the token.
                    call.access_token = self._access_token(keeper)
                call.check_deadline()
                reply = _send_with_requests(session, call, params, self.settings.timeout)
            except BaseException as failure:
                call.failed(failure)
            else:
                try:
                    if (result := call.answered(*reply)) is not None:
                        return result
                except DropboxSignUnauthorizedError:
                    if keeper is None or call.access_token is None or not call.reauthorize():
                        raise
                    keeper.rejected(call.access_token)
                    continue
            time.sleep(call.retry_wait())

    def _access_token(self, keeper: TokenKeeper) -> str:
        """An access token a call may leave with: the process's, or a new one refreshed here."""
        if (token := keeper.usable(time.time())) is not None:
            return token
        with keeper.lock:
            # Another thread may have refreshed while this one waited for the lock.
            if (token := keeper.usable(time.time())) is not None:
                return token
            attempt = keeper.start(read_refresh_token(keeper.conn_id, self.log), self._rng)
            while True:
                try:
                    status, body = _refresh_with_requests(self.get_conn(), attempt, self.settings.timeout)
                except DropboxSignError as failure:
                    step: Refreshed | Retry = attempt.failed(failure)
                else:
                    step = attempt.answered(status, body, time.time())
                if isinstance(step, Refreshed):
                    break
                wait: Retry | None = step
                while wait is not None:
                    time.sleep(wait.delay)
                    wait = (
                        attempt.newer(read_refresh_token(keeper.conn_id, self.log)) if wait.reread else None
                    )
            from airflow.sdk.log import mask_secret

            for secret in secrets_of(step):
                mask_secret(secret)
            if step.rotated:
                write_refresh_token(keeper.conn_id, step.rotated, self.log)
            self._log_refresh(keeper, step)
            return step.token.value

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
        return self._pages(
            "/signature_request/list",
            "signature_requests",
            lambda page: list_params(query, account_id, page_size, page),
        )

    def list_bulk_send_job_signature_requests(
        self, bulk_send_job_id: str, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """
        The signature requests a bulk send job sent (``GET /bulk_send_job/{bulk_send_job_id}``),
        fetched page by page as the iterator is consumed.

        Dropbox Sign has no bulk cancel: cancel the requests one by one with
        :meth:`cancel_signature_request`. Collect their ids first: whether a cancelled request
        stays in the job's pages is not documented, so cancelling while paging may shift the pages
        still to come.

        :param bulk_send_job_id: the job's id; checked before anything is sent.
        :param page_size: requests per page, 1 to 100.
        :raises ValueError: naming a bad ``bulk_send_job_id`` or ``page_size``, before any call.
        :raises DropboxSignNotFoundError: for a job this account does not have.
        """
        path = bulk_send_job_path(bulk_send_job_id)
        page_params(page_size, 1)
        return self._pages(path, "signature_requests", lambda page: page_params(page_size, page))

    def list_bulk_send_jobs(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """
        The account's bulk send jobs (``GET /bulk_send_job/list``), fetched page by page as the
        iterator is consumed; each has ``bulk_send_job_id``, ``total``, ``is_creator`` and ``created_at``.

        :param page_size: jobs per page, 1 to 100.
        :raises ValueError: naming a bad ``page_size``, before any call.
        """
        page_params(page_size, 1)
        return self._pages("/bulk_send_job/list", "bulk_send_jobs", lambda page: page_params(page_size, page))

    def list_signature_requests_page(
        self, query: str | None = None, page: int = 1, page_size: int = MAX_PAGE_SIZE
    ) -> tuple[list[dict[str, Any]], int]:
        """
        One page of the signature requests matching ``query``: one call, for a caller that shows
        the list page by page.

        :param query: Dropbox Sign search syntax.
        :param page: the page, from 1.
        :param page_size: requests per page, 1 to 100.
        :return: the page's requests and how many pages the list has.
        :raises ValueError: naming a bad ``page`` or ``page_size``, before any call.
        """
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            raise ValueError(f"page {page!r} must be a positive integer")
        return self._page(
            "/signature_request/list", "signature_requests", list_params(query, None, page_size, page)
        )

    def _page(self, path: str, name: str, params: dict[str, Any]) -> tuple[list[Any], int]:
        return page_items(self._request("GET", path, params), name, "GET", path)

    def _pages(
        self, path: str, name: str, params_of: Callable[[int], dict[str, Any]]
    ) -> Iterator[dict[str, Any]]:
        page, num_pages = 1, 1
        while page <= num_pages:
            items, num_pages = self._page(path, name, params_of(page))
            yield from items
            page += 1

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the credentials with ``GET /account``, as the UI's Test button does.

        The Test button checks the form under a random, temporary connection id: problems are
        reported of "This connection", never of that id.
        """
        try:
            if (untested := self._untested_app(self._read_settings(named=False))) is not None:
                return untested
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
            headers = {"Accept": "application/json"}
            if settings.authorization:
                headers["Authorization"] = settings.authorization
            shared = sessions[settings] = _SharedSession(
                aiohttp.ClientSession(
                    headers=headers,
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
        settings = await self.get_settings()
        call = self._call(settings, method, path, deadline)
        keeper = self._keeper(settings)
        while True:
            wait, claimed = call.reserve()
            if not claimed:
                await call.aidle(asyncio.sleep)
                continue
            try:
                if wait > 0:
                    await asyncio.sleep(wait)
                if keeper is not None:
                    call.access_token = await self._access_token(keeper)
                call.check_deadline()
                reply = await _send_with_aiohttp(session, call, params)
            except BaseException as failure:  # cancelled too: the trigger was stopped
                call.failed(failure)
            else:
                try:
                    if (result := call.answered(*reply)) is not None:
                        return result
                except DropboxSignUnauthorizedError:
                    if keeper is None or call.access_token is None or not call.reauthorize():
                        raise
                    keeper.rejected(call.access_token)
                    continue
            await asyncio.sleep(call.retry_wait())

    async def _access_token(self, keeper: TokenKeeper) -> str:
        """Async :meth:`DropboxSignHook._access_token`: one trigger of the loop refreshes, the rest reuse."""
        if (token := keeper.usable(time.time())) is not None:
            return token
        from asgiref.sync import sync_to_async

        from dropbox_sign_provider.version_compat import amask_secret

        # Variables are read and written through the Task SDK's blocking calls: off the event loop.
        read = sync_to_async(read_refresh_token, thread_sensitive=False)
        async with keeper.async_lock():
            if (token := keeper.usable(time.time())) is not None:
                return token
            attempt = keeper.start(await read(keeper.conn_id, self.log), self._rng)
            session = await self.get_session()
            while True:
                try:
                    status, body = await _refresh_with_aiohttp(session, attempt)
                except DropboxSignError as failure:
                    step: Refreshed | Retry = attempt.failed(failure)
                else:
                    step = attempt.answered(status, body, time.time())
                if isinstance(step, Refreshed):
                    break
                wait: Retry | None = step
                while wait is not None:
                    await asyncio.sleep(wait.delay)
                    wait = attempt.newer(await read(keeper.conn_id, self.log)) if wait.reread else None
            for secret in secrets_of(step):
                await amask_secret(secret)
            if step.rotated:
                await sync_to_async(write_refresh_token, thread_sensitive=False)(
                    keeper.conn_id, step.rotated, self.log
                )
            self._log_refresh(keeper, step)
            return step.token.value

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
