"""
A faithful local emulator of the Dropbox Sign API, for tests that must not reach the real service.

The emulator is a real HTTP server on loopback (aiohttp), so the code under test runs unchanged:
same URLs, same authentication, same answers, same rate-limit headers and the same
*asynchronous* cancellation (``200 {}`` first, ``410 deleted`` once the cancellation has
really happened). It answers only the calls this provider needs::

    GET  /v3/account
    GET  /v3/signature_request/{id}
    GET  /v3/signature_request/list?page=&page_size=&query=&account_id=
    POST /v3/signature_request/cancel/{id}
    POST /v3/signature_request/remove/{id}

and can inject the failures a production client must survive (latency, 5xx, dropped
connections, malformed bodies, rate-limit storms, cancellations that never complete).

Using it in your own DAG tests
------------------------------
Start one per test (or per module) and point a Dropbox Sign connection at it::

    import json

    import pytest

    from dropbox_sign_provider.testing import DropboxSignEmulator


    @pytest.fixture
    def dropbox_sign(monkeypatch):
        with DropboxSignEmulator(api_keys=("test-key",), cancel_delay=0.2) as emulator:
            monkeypatch.setenv(
                "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
                json.dumps({"conn_type": "dropbox_sign", "host": emulator.url, "password": "test-key"}),
            )
            yield emulator


    def test_stale_requests_are_cancelled(dropbox_sign):
        stale = dropbox_sign.create_signature_request(title="NDA", created_at=1_600_000_000)
        signed = dropbox_sign.create_signature_request(title="NDA", is_complete=True)

        my_dag.test()  # or run the task / hook you are testing

        assert dropbox_sign.get_state(stale["signature_request_id"]) == "canceled"
        assert dropbox_sign.get_state(signed["signature_request_id"]) == "completed"
        assert dropbox_sign.cancel_calls(stale["signature_request_id"]) == 1

The connection's host is :attr:`DropboxSignEmulator.url` (the API root, like
``https://api.hellosign.com``); :attr:`DropboxSignEmulator.base_url` is the same with ``/v3``
for clients that want the full base, such as the official SDK
(``dropbox_sign.Configuration(username="test-key", host=emulator.base_url)``).

Faults are switched on with :meth:`DropboxSignEmulator.set_fault` (pass ``seed`` for
reproducible runs); every ``/v3`` call, faulty or not, lands in
:attr:`DropboxSignEmulator.requests_log`, so a test can assert how a client behaved, e.g. that
it never exceeded the rate limit or never cancelled the same request twice.

Outside Python (CI scripts, other languages) run ``dropbox-sign-emulator --port 0 --port-file
port.txt`` and drive it through the admin API under ``/_emulator/`` (create requests, set
faults, read the request log).

The admin API can rewrite every request, so the emulator refuses to bind an address that is not
a loopback one unless told ``allow_remote=True`` (``--allow-remote``); the admin API then
requires a token in the ``X-Emulator-Token`` header (:attr:`DropboxSignEmulator.admin_token`;
the command line writes it next to the port file, or prints it once to stderr).

Time: the emulator reads the clock only through this module's ``time`` reference
(``time.time()`` for epoch values such as rate-limit windows and ``created_at``,
``time.monotonic()`` for durations such as ``cancel_delay``). Tests may replace it, e.g.
``monkeypatch.setattr(emulator_module, "time", FakeClock())``, with any object offering
``time()`` and ``monotonic()``.

Choices where the documentation is silent
-----------------------------------------
Where Dropbox Sign's public documentation is silent, the emulator makes a choice rather than
pretending to know. Code under test should not depend on these answers. Each is marked
``Undocumented (<topic>)`` in the source:

- *a password with the key*: HTTP Basic with a non-empty password is accepted; the key is the
  user name either way.
- *an unsupported method*: an unsupported method on a known path answers 404 ``not_found``,
  like any unknown path.
- *the 403 wording*: the message of 403 ``forbidden`` (its status and ``error_name`` follow the
  official example).
- *cancel of a completed or declined request*: 400 ``bad_request``, as the API refuses other
  ineligible operations.
- *cancel of a cancelled request*: 410 ``deleted``, as every other access to a cancelled (or
  removed) request answers; the call is counted by :meth:`DropboxSignEmulator.cancel_calls`.
- *cancel while one is queued*: ``200 {}`` again, and the cancellation keeps its first due time.
- *remove of an unfinished request*: 400 ``bad_request`` (the spec says only that removal needs a
  request signed or declined by all parties).
- *another account_id*: listing with an ``account_id`` that is neither this account nor ``all``
  answers 400 ``bad_request`` naming it, as if it were not a team member.
- *cancelled requests in lists*: cancelled, removed and forbidden requests are left out of list
  results; queued cancellations are still listed.
- *num_pages of an empty list*: 0, what ``ceil(0 / page_size)`` gives.
- *how title: and metadata: match*: a case-insensitive substring of the title or of any metadata
  value.
- *parentheses in a query*: refused with 400 ``bad_request``, as the docs never mention grouping.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import datetime
import hmac
import ipaddress
import json
import logging
import math
import os
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web

from dropbox_sign_provider.events import event_hash

__all__ = ["DropboxSignEmulator", "LoggedRequest", "OddAnswer", "event_hash", "main"]

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "5008b25c7f67153e57d5a357b1687968068fb465"
CALLBACK_ACK = "Hello API Event Received"

#: Every state :meth:`DropboxSignEmulator.get_state` can answer.
STATES = ("awaiting_signature", "cancel_requested", "canceled", "completed", "declined")

_CALLBACK_FIRST_DELAY = 0.2
_CALLBACK_MAX_DELAY = 5.0
_CALLBACK_MAX_ATTEMPTS = 20
_CALLBACK_TIMEOUT = 5.0
_SWEEP_INTERVAL = 0.05

_Predicate = Callable[[dict[str, Any]], bool]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The header that carries the admin token, when the admin API requires one (a name, not a secret).
ADMIN_TOKEN_HEADER = "X-Emulator-Token"  # noqa: S105

_WORD_RE = re.compile(r"[^\s\"*?:()\[\]{}\\]+")
_CREATED_RE = re.compile(r"created:([\[{])(\S+) TO (\S+)([\]}])")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_GATEWAY_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
_ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    410: "deleted",
    429: "exceeded_rate",
}
_FAULT_FIELDS = (
    "latency",
    "error_rate",
    "error_statuses",
    "drop_rate",
    "malformed_rate",
    "rate_limit_storm",
    "never_complete",
    "seed",
)


class LoggedRequest(NamedTuple):
    """
    One ``/v3`` call as the emulator saw it.

    :ivar method: HTTP method, e.g. ``"POST"``.
    :ivar path: full URL path without the query string, e.g. ``"/v3/signature_request/cancel/<id>"``.
    :ivar status: HTTP status answered, ``0`` when the connection was dropped on purpose.
    :ivar time: epoch seconds at which the call arrived.
    """

    method: str
    path: str
    status: int
    time: float


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path


@dataclass(frozen=True)
class OddAnswer:
    """
    One answer that a real API, a proxy or a load balancer in front of it might give, served in
    place of (or on top of) the emulator's own: see :meth:`DropboxSignEmulator.add_odd_answers`.

    :param status: the status to answer, with ``body`` and ``headers`` only; ``None`` lets the
        emulator answer as usual (the call then counts and acts as it normally would) and only
        ``headers`` are changed.
    :param headers: headers to add or replace, e.g. ``{"X-Ratelimit-Reset": "1794244889475"}`` or
        ``{"Location": ...}``; a value of ``None`` removes the header (a proxy that strips it).
    :param body: the body, served as it is (``status`` given only).
    :param method: only calls with this method, e.g. ``"POST"``; any method when ``None``.
    :param path_prefix: only calls whose path starts with this, e.g. ``"/v3/signature_request/cancel/"``.
    :param times: how many matching calls get this answer before it is used up.
    """

    status: int | None = None
    headers: Mapping[str, str | None] = field(default_factory=dict)
    body: bytes | str = b""
    method: str | None = None
    path_prefix: str = "/v3"
    times: int = 1

    @classmethod
    def error(
        cls,
        status: int,
        error_name: str,
        error_msg: str,
        *,
        headers: Mapping[str, str | None] | None = None,
        **match: Any,
    ) -> OddAnswer:
        """
        An answer in the API's error envelope (``{"error": {"error_msg", "error_name"}}``), e.g.
        ``OddAnswer.error(402, "payment_required", "Payment required.", method="GET",
        path_prefix=f"/v3/signature_request/{sr_id}", times=100)``.

        :param status: the HTTP status.
        :param error_name: the envelope's ``error_name``.
        :param error_msg: the envelope's ``error_msg``.
        :param headers: more headers (the JSON content type is always set).
        :param match: ``method``, ``path_prefix`` and ``times``, as for the class itself.
        """
        body = json.dumps({"error": {"error_msg": error_msg, "error_name": error_name}})
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body, **match)

    def matches(self, method: str, path: str) -> bool:
        """Whether a call to ``method path`` gets this answer."""
        return (self.method is None or self.method.upper() == method.upper()) and path.startswith(
            self.path_prefix
        )


@dataclass(frozen=True)
class _Faults:
    latency: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    rate_limit_storm: float = 0.0
    never_complete: bool | int = False
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FAULT_FIELDS} | {
            "error_statuses": list(self.error_statuses)
        }


@dataclass
class _FaultPlan:
    latency: float = 0.0
    drop: bool = False
    storm: bool = False
    error_status: int | None = None
    malformed: bool = False


@dataclass
class _Record:
    body: dict[str, Any]
    forbidden: bool
    accepted_cancels: int = 0
    cancel_due: float | None = None
    cancel_lost: bool = False
    canceled_at: float | None = None
    removed: bool = False


@dataclass
class _RateWindow:
    index: int = -1
    used: int = 0


@dataclass
class _Lifecycle:
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None
    runner: web.AppRunner | None = None
    session: aiohttp.ClientSession | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _envelope(
    status: int, message: str, *, name: str | None = None, path: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"error_msg": message, "error_name": name or _ERROR_NAMES.get(status, "error")}
    if path is not None:
        error["error_path"] = path
    return {"error": error}


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=dict(headers or {}),
    )


def _apply_headers(response: web.StreamResponse, headers: Mapping[str, str | None]) -> None:
    for name, value in headers.items():
        response.headers.popall(name, None)
        if value is not None:
            response.headers[name] = value


def _same_secret(given: str, expected: str) -> bool:
    """
    Compare a credential from a request with an expected one in constant time.

    :param given: the credential as the request carried it (any text, attacker-chosen).
    :param expected: the credential the emulator accepts.
    :return: whether they are the same.
    """
    # hmac.compare_digest raises TypeError for str holding non-ASCII characters, which would turn
    # a wrong credential into a 500; bytes compare fine. surrogatepass encodes any str, including
    # the lone surrogates aiohttp decodes non-UTF-8 header bytes into.
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _is_loopback(host: str) -> bool:
    """
    Tell whether binding ``host`` listens on loopback addresses only.

    :param host: an IP address or a host name, as given to ``TCPSite``.
    :return: ``True`` only if every address the name resolves to is a loopback one, since the
        server binds them all; ``""`` (every interface) and names that do not resolve are not.
    """
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _check_bind(host: str, allow_remote: bool) -> None:
    if allow_remote or _is_loopback(host):
        return
    raise ValueError(
        f"host {host!r} is not a loopback address: binding it would open the emulator's unprotected "
        "admin API (/_emulator/) to the network. Bind 127.0.0.1, or pass allow_remote=True "
        f"(--allow-remote) to bind it anyway, the admin API then requiring the {ADMIN_TOKEN_HEADER} header."
    )


def _check_rate(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value


class DropboxSignEmulator:
    """
    A local Dropbox Sign API on loopback, with state you can seed and inspect.

    :param api_keys: API keys accepted as HTTP Basic user names; the first one signs callback events.
    :param access_tokens: OAuth access tokens accepted as ``Authorization: Bearer``.
    :param rate_limit: requests per window for the whole account (all keys and tokens share it).
    :param window_seconds: length of a rate-limit window; windows are aligned to multiples of it
        on the epoch clock.
    :param cancel_delay: seconds between an accepted cancel call and the cancellation really
        happening (after which the request answers 410).
    :param callback_url: where ``signature_request_canceled`` events are POSTed, or ``None``.
    :param host: interface to bind: a loopback address (or a name resolving only to such) unless
        ``allow_remote`` is set.
    :param port: port to bind, ``0`` for a free one.
    :param account_id: the account's id, as answered by ``GET /account``.
    :param email: the account's email address (also the requester of every signature request).
    :param allow_remote: allow a ``host`` that is not a loopback address. The admin API can seed
        and change every request, so it then requires a token: ``admin_token``, or one generated
        with :func:`secrets.token_urlsafe` (read it from :attr:`admin_token`).
    :param admin_token: the token every admin call but ``/_emulator/health`` must carry in the
        ``X-Emulator-Token`` header; ``None`` (the default) leaves a loopback emulator's admin API
        open, as tests and scripts on the same machine expect.
    :raises ValueError: for a ``host`` that is not a loopback address without ``allow_remote``,
        an empty ``admin_token`` or an out-of-range setting.
    """

    def __init__(
        self,
        api_keys: Iterable[str] = ("test-key",),
        access_tokens: Iterable[str] = ("test-token",),
        rate_limit: int = 100,
        window_seconds: float = 60.0,
        cancel_delay: float = 2.0,
        callback_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        account_id: str = DEFAULT_ACCOUNT_ID,
        email: str = "me@example.com",
        allow_remote: bool = False,
        admin_token: str | None = None,
    ) -> None:
        if isinstance(api_keys, str) or isinstance(access_tokens, str):
            raise TypeError("api_keys and access_tokens are collections of strings, not a single string")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if rate_limit < 0 or cancel_delay < 0:
            raise ValueError("rate_limit and cancel_delay must not be negative")
        if admin_token is not None and not admin_token.strip():
            raise ValueError("admin_token must not be empty: pass None to generate one")
        _check_bind(host, allow_remote)
        self.api_keys: tuple[str, ...] = tuple(api_keys)
        self.access_tokens: tuple[str, ...] = tuple(access_tokens)
        self.rate_limit = int(rate_limit)
        self.window_seconds = float(window_seconds)
        self.cancel_delay = float(cancel_delay)
        self.callback_url = callback_url
        self.host = host
        self.allow_remote = bool(allow_remote)
        self.account_id = account_id
        self.email = email
        self.requests_log: list[LoggedRequest] = []
        """Every ``/v3`` call, in arrival order, faulted and refused ones included."""
        self.callback_events: list[dict[str, Any]] = []
        """The callback events the receiver acknowledged."""

        self._admin_token_generated = admin_token is None and self.allow_remote
        self._admin_token = secrets.token_urlsafe(32) if self._admin_token_generated else admin_token
        self._requested_port = int(port)
        self._port: int | None = None
        self._lock = threading.RLock()
        self._lifecycle_lock = threading.Lock()
        self._life = _Lifecycle()
        self._records: dict[str, _Record] = {}
        self._cancel_calls: dict[str, int] = {}
        self._pending_events: list[dict[str, Any]] = []
        self._window = _RateWindow()
        self._faults = _Faults()
        self._rng = random.Random()
        # [answer, uses left], served in order to the calls they match.
        self._odd_answers: list[list[Any]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> DropboxSignEmulator:
        """
        Bind and serve in a background thread with its own event loop.

        :return: the emulator itself, once it accepts connections.
        :raises OSError: when the address cannot be bound.
        """
        with self._lifecycle_lock:
            if self._life.thread is not None:
                return self
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._thread_main, args=(ready, failure), name="dropbox-sign-emulator", daemon=True
            )
            self._life.thread = thread
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                self._life = _Lifecycle()
                raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and release the port; calling it again does nothing."""
        with self._lifecycle_lock:
            loop, thread = self._life.loop, self._life.thread
            if loop is None or thread is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=15)
            except Exception:
                log.exception("the emulator did not shut down cleanly")
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=15)
            self._life = _Lifecycle()

    def __enter__(self) -> DropboxSignEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        self._life.loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _astart(self) -> None:
        # Checked again here, not only in __init__: ``host`` is a plain attribute and may have changed.
        _check_bind(self.host, self.allow_remote)
        app = web.Application()
        app.router.add_route("*", "/v3", self._handle_v3)
        app.router.add_route("*", "/v3/{tail:.*}", self._handle_v3)
        # Health stays open so that a script can wait for the emulator before it has the token.
        app.router.add_get("/_emulator/health", self._admin_health)
        guarded = self._admin_guarded
        app.router.add_get("/_emulator/signature_requests", guarded(self._admin_list))
        app.router.add_post("/_emulator/signature_requests", guarded(self._admin_create))
        app.router.add_get("/_emulator/faults", guarded(self._admin_get_faults))
        app.router.add_post("/_emulator/faults", guarded(self._admin_set_faults))
        app.router.add_delete("/_emulator/faults", guarded(self._admin_clear_faults))
        app.router.add_get("/_emulator/requests_log", guarded(self._admin_get_log))
        app.router.add_delete("/_emulator/requests_log", guarded(self._admin_clear_log))
        app.router.add_get("/_emulator/callback_events", guarded(self._admin_callback_events))
        # A short shutdown timeout: a request sleeping in the latency fault must not hold stop() for 60 s.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._life.runner = runner
        self._port = int(runner.addresses[0][1])
        if self.callback_url:
            self._life.session = aiohttp.ClientSession()
            self._spawn(self._callback_loop())

    async def _astop(self) -> None:
        tasks = list(self._life.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._life.session is not None:
            await self._life.session.close()
        if self._life.runner is not None:
            await self._life.runner.cleanup()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._life.tasks.add(task)
        task.add_done_callback(self._life.tasks.discard)

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (only known once started)."""
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:8000``: what a connection's host should hold."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The versioned API base, e.g. ``http://127.0.0.1:8000/v3``."""
        return f"{self.url}/v3"

    @property
    def admin_url(self) -> str:
        """The admin API base, e.g. ``http://127.0.0.1:8000/_emulator``."""
        return f"{self.url}/_emulator"

    @property
    def admin_token(self) -> str | None:
        """
        The token admin calls must send in the ``X-Emulator-Token`` header, or ``None`` when the
        admin API is open (a loopback emulator without ``admin_token``).
        """
        return self._admin_token

    # -- state seeding and inspection ------------------------------------------------------------

    def create_signature_request(self, **fields: Any) -> dict[str, Any]:
        """
        Store a signature request, as if it had been sent from this account.

        Accepted fields: ``signature_request_id`` (default: 40 random lowercase hex characters),
        ``title``, ``subject``, ``message``, ``metadata`` (dict), ``created_at`` (epoch seconds,
        default now), ``expires_at`` (epoch seconds or ``None``), ``is_complete``, ``is_declined``,
        ``signers`` (``(name, email)`` pairs or dicts, which may also set ``status_code``,
        ``signed_at``, ``order``...), ``forbidden`` (the request belongs to another sender:
        GET, cancel and remove answer 403) and any other top-level field of the
        SignatureRequestResponse object (e.g. ``cc_email_addresses``, ``has_error``), verbatim.

        :param fields: the fields above.
        :return: the ``signature_request`` object exactly as ``GET /signature_request/{id}`` answers it.
        :raises TypeError: for an unknown field.
        :raises ValueError: for inconsistent or duplicate values.
        """
        forbidden = bool(fields.pop("forbidden", False))
        body = self._build_body(fields)
        with self._lock:
            if body["signature_request_id"] in self._records:
                raise ValueError(f"signature request {body['signature_request_id']!r} already exists")
            record = _Record(body=body, forbidden=forbidden)
            self._records[body["signature_request_id"]] = record
            return self._render(record)

    def get_state(self, signature_request_id: str) -> str:
        """
        Tell where a stored request is in its life.

        :param signature_request_id: the request's id.
        :return: one of ``awaiting_signature``, ``cancel_requested``, ``canceled``, ``completed``,
            ``declined``. A removed (``/remove``) request keeps its state: removal only ends access.
        :raises KeyError: for an unknown id.
        """
        with self._lock:
            return self._state(self._records[signature_request_id])

    def cancel_calls(self, signature_request_id: str) -> int:
        """
        Count the cancel calls for an id that reached the API (any answer, unknown ids included).

        Calls rejected before reaching it (401, 429, injected faults) are not counted; see
        :attr:`requests_log` for every call.

        :param signature_request_id: the id in the cancel URL.
        :return: the number of ``POST /v3/signature_request/cancel/{id}`` calls answered by the API.
        """
        with self._lock:
            return self._cancel_calls.get(signature_request_id, 0)

    def signature_requests(self) -> list[dict[str, Any]]:
        """
        Return every stored request (canceled, forbidden and removed ones included), for assertions.

        :return: the request objects, each with an extra ``state`` key (see :meth:`get_state`).
        """
        with self._lock:
            return [self._render(rec) | {"state": self._state(rec)} for rec in self._records.values()]

    def set_fault(
        self,
        *,
        latency: float = 0.0,
        error_rate: float = 0.0,
        error_statuses: Sequence[int] = (500, 502, 503),
        drop_rate: float = 0.0,
        malformed_rate: float = 0.0,
        rate_limit_storm: float = 0.0,
        never_complete: bool | int = False,
        seed: int | None = None,
    ) -> None:
        """
        Replace the injected faults (faults not named are switched off).

        Injected faults happen "in front of" the API: they neither consume the rate-limit budget
        nor change any state. In particular a malformed answer to a cancel call means the cancel
        did *not* happen. Gateway errors (502, 503, 504) answer an HTML page without rate-limit
        headers, like a load balancer; other statuses answer the JSON error envelope.

        :param latency: seconds added before answering every ``/v3`` call.
        :param error_rate: fraction of calls answered with a status drawn from ``error_statuses``.
        :param error_statuses: the statuses ``error_rate`` draws from.
        :param drop_rate: fraction of calls whose connection is closed without an answer.
        :param malformed_rate: fraction of calls answered 200 with a truncated, invalid JSON body.
        :param rate_limit_storm: fraction of calls answered 429 ``exceeded_rate`` whatever the budget.
        :param never_complete: ``True``: every cancellation accepted while set stays pending forever;
            an int ``n``: the first ``n`` accepted cancel calls of each request are lost, later ones
            complete normally.
        :param seed: seeds the fault random generator, for reproducible runs.
        :raises ValueError: for an out-of-range value.
        """
        statuses = tuple(int(status) for status in error_statuses)
        if error_rate and not statuses:
            raise ValueError("error_statuses must not be empty when error_rate is set")
        if any(not 400 <= status <= 599 for status in statuses):
            raise ValueError(f"error_statuses must be 4xx or 5xx statuses, got {list(statuses)}")
        if latency < 0:
            raise ValueError("latency must not be negative")
        if not isinstance(never_complete, bool) and (
            not isinstance(never_complete, int) or never_complete < 0
        ):
            raise ValueError("never_complete must be a bool or a non-negative int")
        faults = _Faults(
            latency=float(latency),
            error_rate=_check_rate("error_rate", error_rate),
            error_statuses=statuses,
            drop_rate=_check_rate("drop_rate", drop_rate),
            malformed_rate=_check_rate("malformed_rate", malformed_rate),
            rate_limit_storm=_check_rate("rate_limit_storm", rate_limit_storm),
            never_complete=never_complete,
            seed=seed,
        )
        with self._lock:
            self._faults = faults
            self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        """Switch every injected fault off, odd answers included."""
        with self._lock:
            self._faults = _Faults()
            self._odd_answers.clear()

    def add_odd_answers(self, *answers: OddAnswer) -> None:
        """
        Serve odd answers to the next matching ``/v3`` calls, in the order given: a redirect, a
        ``304`` with no body, a rate-limit header in milliseconds or an hour ahead, a ``429``
        whose rate-limit headers a proxy stripped, an oversized body... Each is logged in
        :attr:`requests_log` like any other call; one with a ``status`` changes no state.

        :param answers: the answers; each is used ``times`` times, then dropped.
        :raises ValueError: for a ``times`` below 1 or a status outside 100 to 599.
        """
        for answer in answers:
            if answer.times < 1:
                raise ValueError(f"times {answer.times!r} must be 1 or more")
            if answer.status is not None and not 100 <= answer.status <= 599:
                raise ValueError(f"status {answer.status!r} must be from 100 to 599")
        with self._lock:
            self._odd_answers.extend([answer, answer.times] for answer in answers)

    def _take_odd_answer(self, method: str, path: str) -> OddAnswer | None:
        with self._lock:
            for entry in self._odd_answers:
                answer, _ = entry
                if answer.matches(method, path):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._odd_answers.remove(entry)
                    return answer  # type: ignore[no-any-return]
            return None

    @property
    def faults(self) -> dict[str, Any]:
        """The faults in force, as keyword arguments of :meth:`set_fault`."""
        with self._lock:
            return self._faults.as_dict()

    def clear_log(self) -> None:
        """Forget every logged ``/v3`` call."""
        with self._lock:
            self.requests_log.clear()

    # -- signature request model ------------------------------------------------------------------

    def _build_body(self, fields: dict[str, Any]) -> dict[str, Any]:
        fields = dict(fields)
        now = int(time.time())
        request_id = str(fields.pop("signature_request_id", None) or secrets.token_hex(20))
        if "/" in request_id or not request_id.strip():
            raise ValueError(f"invalid signature_request_id {request_id!r}")
        is_complete = bool(fields.pop("is_complete", False))
        is_declined = bool(fields.pop("is_declined", False))
        if is_complete and is_declined:
            raise ValueError("a signature request cannot be both complete and declined")
        title = str(fields.pop("title", "Purchase Agreement"))
        metadata = fields.pop("metadata", None) or {}
        if not isinstance(metadata, dict):
            raise ValueError("metadata must be a dict")
        created_at = int(fields.pop("created_at", None) or now)
        expires_at = fields.pop("expires_at", None)
        signers = fields.pop("signers", None) or [("George Jetson", "george-jetson@example.com")]
        subject = fields.pop("subject", title)
        message = fields.pop("message", "Please sign and return.")

        signatures = [
            self._build_signature(signer, index, created_at, is_complete, is_declined)
            for index, signer in enumerate(signers)
        ]
        body: dict[str, Any] = {
            "signature_request_id": request_id,
            "test_mode": False,
            "title": title,
            "original_title": title,
            "subject": subject,
            "message": message,
            "metadata": copy.deepcopy(metadata),
            "created_at": created_at,
            "expires_at": None if expires_at is None else int(expires_at),
            "is_complete": is_complete,
            "is_declined": is_declined,
            "has_error": False,
            "custom_fields": [],
            "response_data": [],
            "signing_url": None
            if is_complete or is_declined
            else f"https://app.hellosign.com/sign/{request_id}",
            "signing_redirect_url": None,
            "files_url": f"https://api.hellosign.com/v3/signature_request/files/{request_id}",
            "details_url": f"https://app.hellosign.com/home/manage?guid={request_id}",
            "requester_email_address": self.email,
            "signatures": signatures,
            "cc_email_addresses": [],
            "template_ids": None,
            "signer_experience": {"form_view": "disabled"},
        }
        unknown = sorted(set(fields) - set(body))
        if unknown:
            raise TypeError(f"unknown signature request field(s): {', '.join(unknown)}")
        body.update(copy.deepcopy(fields))
        return body

    @staticmethod
    def _build_signature(
        signer: Any, index: int, created_at: int, is_complete: bool, is_declined: bool
    ) -> dict[str, Any]:
        if isinstance(signer, Mapping):
            extra = dict(signer)
            name = extra.pop("name", extra.pop("signer_name", f"Signer {index + 1}"))
            email = extra.pop("email", extra.pop("email_address", extra.pop("signer_email_address", None)))
        else:
            name, email = signer
            extra = {}
        if is_complete:
            status = "signed"
        elif is_declined and index == 0:
            status = "declined"
        else:
            status = "awaiting_signature"
        status = extra.pop("status_code", status)
        acted = created_at + 60 * (index + 1) if status in ("signed", "declined") else None
        signature: dict[str, Any] = {
            "signature_id": secrets.token_hex(16),
            "signer_email_address": email or f"signer{index + 1}@example.com",
            "signer_name": name,
            "signer_role": None,
            "order": None,
            "status_code": status,
            "decline_reason": None,
            "signed_at": acted if status == "signed" else None,
            "last_viewed_at": acted,
            "last_reminded_at": None,
            "has_pin": False,
            "has_sms_auth": False,
        }
        signature.update(extra)
        return signature

    def _render(self, record: _Record) -> dict[str, Any]:
        body = copy.deepcopy(record.body)
        expires_at = body.get("expires_at")
        # Dropbox Sign marks the unsigned signatures "expired" once expires_at has passed.
        if expires_at is not None and time.time() >= expires_at and not body["is_complete"]:
            for signature in body["signatures"]:
                if signature["status_code"] == "awaiting_signature":
                    signature["status_code"] = "expired"
        return body

    def _state(self, record: _Record) -> str:
        """Caller holds the lock. Completes a due cancellation on the way (lazily, no timers)."""
        if record.canceled_at is not None:
            return "canceled"
        if record.cancel_due is not None:
            if record.cancel_lost or time.monotonic() < record.cancel_due:
                return "cancel_requested"
            record.canceled_at = time.time()
            if self.callback_url:
                self._pending_events.append(self._canceled_event(record))
            return "canceled"
        if record.body["is_complete"]:
            return "completed"
        if record.body["is_declined"]:
            return "declined"
        return "awaiting_signature"

    # -- callbacks ---------------------------------------------------------------------------------

    def _canceled_event(self, record: _Record) -> dict[str, Any]:
        event_time = str(int(record.canceled_at or time.time()))
        event_type = "signature_request_canceled"
        key = self.api_keys[0] if self.api_keys else ""
        return {
            "event": {
                "event_time": event_time,
                "event_type": event_type,
                "event_hash": event_hash(key, event_time, event_type),
                "event_metadata": {
                    "related_signature_id": None,
                    "reported_for_account_id": self.account_id,
                    "reported_for_app_id": None,
                    "event_message": None,
                },
            },
            "signature_request": self._render(record),
        }

    async def _callback_loop(self) -> None:
        while True:
            with self._lock:
                for record in self._records.values():
                    self._state(record)
                events, self._pending_events = self._pending_events, []
            for event in events:
                self._spawn(self._deliver(event))
            await asyncio.sleep(_SWEEP_INTERVAL)

    async def _deliver(self, event: dict[str, Any]) -> None:
        session = self._life.session
        assert session is not None
        assert self.callback_url is not None
        payload = json.dumps(event)
        delay = _CALLBACK_FIRST_DELAY
        for attempt in range(1, _CALLBACK_MAX_ATTEMPTS + 1):
            form = aiohttp.FormData(default_to_multipart=True)
            form.add_field("json", payload)
            try:
                async with session.post(
                    self.callback_url, data=form, timeout=aiohttp.ClientTimeout(total=_CALLBACK_TIMEOUT)
                ) as response:
                    text = await response.text()
                    if response.status == 200 and text.strip() == CALLBACK_ACK:
                        with self._lock:
                            self.callback_events.append(event)
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.debug("callback attempt %d failed: %s", attempt, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _CALLBACK_MAX_DELAY)
        log.warning(
            "giving up delivering %s for %s after %d attempts",
            event["event"]["event_type"],
            event["signature_request"]["signature_request_id"],
            _CALLBACK_MAX_ATTEMPTS,
        )

    # -- the /v3 API -------------------------------------------------------------------------------

    async def _handle_v3(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        plan = self._plan_faults()
        if plan.latency:
            await asyncio.sleep(plan.latency)
        if plan.drop:
            self._log(request, 0, arrived)
            if request.transport is not None:
                request.transport.close()
            # Nothing reaches the client: its transport is already closed.
            return web.Response(status=500)
        odd = self._take_odd_answer(request.method, request.path)
        if odd is not None and odd.status is not None:
            body = odd.body.encode() if isinstance(odd.body, str) else odd.body
            response = web.Response(status=odd.status, body=body or None)
            _apply_headers(response, odd.headers)
            self._log(request, response.status, arrived)
            return response
        if plan.storm:
            headers = self._rate_headers(self.rate_limit, math.ceil(time.time() + 1))
            response = _json_response(429, _envelope(429, "Too many requests."), headers)
        elif plan.error_status is not None:
            response = self._error_fault(plan.error_status)
        elif plan.malformed:
            response = web.Response(
                status=200,
                text='{"signature_request": {"signature_request_id": "',
                content_type="application/json",
                headers=self._peek_rate_headers(),
            )
        else:
            response = self._api(request)
        if odd is not None:
            _apply_headers(response, odd.headers)
        self._log(request, response.status, arrived)
        return response

    def _plan_faults(self) -> _FaultPlan:
        with self._lock:
            faults, rng = self._faults, self._rng
            plan = _FaultPlan(latency=faults.latency)
            if faults.drop_rate and rng.random() < faults.drop_rate:
                plan.drop = True
            elif faults.rate_limit_storm and rng.random() < faults.rate_limit_storm:
                plan.storm = True
            elif faults.error_rate and rng.random() < faults.error_rate:
                plan.error_status = rng.choice(faults.error_statuses)
            elif faults.malformed_rate and rng.random() < faults.malformed_rate:
                plan.malformed = True
            return plan

    def _error_fault(self, status: int) -> web.Response:
        if status in _GATEWAY_REASONS:
            reason = _GATEWAY_REASONS[status]
            page = (
                f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                f"<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
            )
            return web.Response(status=status, text=page, content_type="text/html")
        name = _ERROR_NAMES.get(status, "internal_error" if status >= 500 else "error")
        body = _envelope(status, "An internal error occurred. Please try again later.", name=name)
        if status < 500:
            body = _envelope(status, f"Injected {status} fault.", name=name)
        return _json_response(status, body, self._peek_rate_headers())

    def _log(self, request: web.Request, status: int, arrived: float) -> None:
        with self._lock:
            self.requests_log.append(LoggedRequest(request.method, request.path, status, arrived))

    def _api(self, request: web.Request) -> web.Response:
        with self._lock:
            if not self._authenticated(request.headers.get("Authorization")):
                message = (
                    "Unauthorized user. No credentials supplied."
                    if "Authorization" not in request.headers
                    else "Unauthorized user. Invalid credentials supplied."
                )
                return _json_response(401, _envelope(401, message), self._peek_rate_headers())
            headers = self._consume_rate()
            if headers is None:
                return _json_response(429, _envelope(429, "Too many requests."), self._peek_rate_headers())
            try:
                status, body = self._route(request)
            except _ApiError as exc:
                status, body = exc.status, _envelope(exc.status, exc.message, path=exc.path)
            return _json_response(status, body, headers)

    def _authenticated(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            return any(_same_secret(credentials, token) for token in self.access_tokens)
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Undocumented (a password with the key): a non-empty password is accepted; the key is the
        # user name either way.
        user = decoded.partition(":")[0]
        return any(_same_secret(user, key) for key in self.api_keys)

    # -- rate limit --------------------------------------------------------------------------------

    def _current_window(self) -> tuple[int, int]:
        """Caller holds the lock. Rolls the window over and returns (used, reset)."""
        now = time.time()
        index = math.floor(now / self.window_seconds)
        if index != self._window.index:
            self._window = _RateWindow(index=index, used=0)
        reset = math.ceil(round((index + 1) * self.window_seconds, 6))
        return self._window.used, reset

    def _rate_headers(self, used: int, reset: int) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - used)),
            "X-Ratelimit-Reset": str(reset),
        }

    def _peek_rate_headers(self) -> dict[str, str]:
        with self._lock:
            return self._rate_headers(*self._current_window())

    def _consume_rate(self) -> dict[str, str] | None:
        """Caller holds the lock. Spends one request of the budget, or returns None when exhausted."""
        used, reset = self._current_window()
        if used >= self.rate_limit:
            return None
        self._window.used += 1
        return self._rate_headers(used + 1, reset)

    # -- routing -----------------------------------------------------------------------------------

    def _route(self, request: web.Request) -> tuple[int, Any]:
        parts = [part for part in request.path.split("/") if part][1:]
        method = request.method
        if method == "GET" and parts == ["account"]:
            return 200, self._account()
        if method == "GET" and parts == ["signature_request", "list"]:
            return 200, self._list(request.query)
        if len(parts) == 2 and parts[0] == "signature_request" and method == "GET":
            return 200, {"signature_request": self._render(self._accessible(parts[1]))}
        if len(parts) == 3 and parts[:2] == ["signature_request", "cancel"] and method == "POST":
            self._cancel_calls[parts[2]] = self._cancel_calls.get(parts[2], 0) + 1
            self._cancel(parts[2])
            return 200, {}
        if len(parts) == 3 and parts[:2] == ["signature_request", "remove"] and method == "POST":
            self._remove(parts[2])
            return 200, {}
        # Undocumented (an unsupported method): on a known path it is a 404, like everything unknown.
        raise _ApiError(404, "Not found.")

    def _account(self) -> dict[str, Any]:
        return {
            "account": {
                "account_id": self.account_id,
                "email_address": self.email,
                "is_locked": False,
                "is_paid_hs": True,
                "is_paid_hf": False,
                "quotas": {
                    "api_signature_requests_left": 1250,
                    "documents_left": None,
                    "templates_left": None,
                    "sms_signatures_left": 1,
                },
                "callback_url": self.callback_url,
                "role_code": None,
                "locale": "en-US",
            }
        }

    def _accessible(self, request_id: str) -> _Record:
        record = self._records.get(request_id)
        if record is None:
            raise _ApiError(404, "Not found.")
        if record.forbidden:
            # Undocumented (the 403 wording): the status and error_name follow the official 403 example.
            raise _ApiError(403, "You do not have access to this signature request.")
        if record.removed or self._state(record) == "canceled":
            raise _ApiError(410, "This resource has been deleted.")
        return record

    def _cancel(self, request_id: str) -> None:
        # Undocumented (cancel of a cancelled request): _accessible answers 410 deleted, as it does
        # to every other access once the cancellation has happened (or the request was removed).
        record = self._accessible(request_id)
        state = self._state(record)
        # Undocumented (cancel of a completed or declined request): the docs only say they are not
        # eligible; 400 bad_request follows how the API refuses other ineligible operations.
        if state == "completed":
            raise _ApiError(400, "This request has already been completed and cannot be canceled.")
        if state == "declined":
            raise _ApiError(400, "This request has been declined and cannot be canceled.")
        # Undocumented (cancel while one is queued): 200 again, keeping the first due time, since a
        # queued cancellation cannot be queued twice; a lost one (never_complete) is queued anew.
        if state == "cancel_requested" and not record.cancel_lost:
            return
        record.accepted_cancels += 1
        never = self._faults.never_complete
        if never is True:
            lost = True
        elif never is False:
            lost = False
        else:
            lost = record.accepted_cancels <= never
        record.cancel_lost = lost
        record.cancel_due = time.monotonic() + self.cancel_delay

    def _remove(self, request_id: str) -> None:
        record = self._accessible(request_id)
        state = self._state(record)
        # The spec: removal needs a request "fully executed by all parties (signed or declined to sign)".
        # Undocumented (remove of an unfinished request): the answer; 400 bad_request, as for cancel.
        if state not in ("completed", "declined"):
            raise _ApiError(400, "This request has not been completed yet. Cancel it instead.")
        record.removed = True

    def _list(self, query: Mapping[str, str]) -> dict[str, Any]:
        page = self._int_param(query, "page", 1)
        page_size = self._int_param(query, "page_size", 20)
        if page < 1:
            raise _ApiError(400, f"page must be 1 or more, got {page}.", path="page")
        if not 1 <= page_size <= 100:
            raise _ApiError(400, f"page_size must be between 1 and 100, got {page_size}.", path="page_size")
        account_id = query.get("account_id")
        # Undocumented (another account_id): the answer for an account that is not a team member;
        # this account has no team.
        if account_id not in (None, "", "all", self.account_id):
            message = f"account_id {account_id!r} is not a member of your team."
            raise _ApiError(400, message, path="account_id")
        matches_query = _parse_query(query.get("query", ""))
        # Undocumented (cancelled requests in lists): left out, like removed and forbidden ones, as
        # GET answers 410 or 403 for them.
        matches = [
            self._render(record)
            for record in self._records.values()
            if not record.forbidden
            and not record.removed
            and self._state(record) != "canceled"
            and matches_query(record.body)
        ]
        matches.sort(key=lambda body: (-int(body["created_at"]), body["signature_request_id"]))
        start = (page - 1) * page_size
        return {
            "signature_requests": matches[start : start + page_size],
            "list_info": {
                "page": page,
                # Undocumented (num_pages of an empty list): 0 is what ceil(0 / page_size) gives.
                "num_pages": math.ceil(len(matches) / page_size),
                "num_results": len(matches),
                "page_size": page_size,
            },
        }

    @staticmethod
    def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
        raw = query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise _ApiError(400, f"{name} must be an integer, got {raw!r}.", path=name) from None

    # -- admin API ---------------------------------------------------------------------------------

    def _admin_guarded(self, handler: _Handler) -> _Handler:
        """Wrap an admin handler so that it answers 401 unless the request carries the admin token."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self._admin_token
            if token is not None:
                given = request.headers.get(ADMIN_TOKEN_HEADER)
                if given is None or not _same_secret(given, token):
                    problem = "No admin token supplied" if given is None else "Invalid admin token supplied"
                    message = (
                        f"{problem}: send the emulator's admin token in the {ADMIN_TOKEN_HEADER} header."
                    )
                    return web.json_response(_envelope(401, message), status=401)
            return await handler(request)

        return guarded

    async def _admin_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _admin_list(self, request: web.Request) -> web.Response:
        return web.json_response(self.signature_requests())

    async def _admin_create(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            if isinstance(payload, list):
                created: Any = [self._create_from_json(item) for item in payload]
            else:
                created = self._create_from_json(payload)
        except (ValueError, TypeError) as exc:
            return web.json_response(_envelope(400, str(exc)), status=400)
        return web.json_response(created)

    def _create_from_json(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise TypeError("each signature request must be a JSON object")
        return self.create_signature_request(**item)

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults)

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise TypeError("faults must be a JSON object")
            unknown = sorted(set(payload) - set(_FAULT_FIELDS))
            if unknown:
                raise TypeError(f"unknown fault(s): {', '.join(unknown)}")
            self.set_fault(**payload)
        except (ValueError, TypeError) as exc:
            return web.json_response(_envelope(400, str(exc)), status=400)
        return web.json_response(self.faults)

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response(self.faults)

    async def _admin_get_log(self, request: web.Request) -> web.Response:
        with self._lock:
            entries = [entry._asdict() for entry in self.requests_log]
        return web.json_response(entries)

    async def _admin_clear_log(self, request: web.Request) -> web.Response:
        self.clear_log()
        return web.json_response([])

    async def _admin_callback_events(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(list(self.callback_events))

    # -- foreground (CLI) --------------------------------------------------------------------------

    async def serve_forever(self, port_file: str | None = None) -> None:
        """
        Serve in the running event loop until SIGINT or SIGTERM (what the CLI does).

        :param port_file: a path to write the bound port to once serving, for scripts. When the
            admin API requires a token, it is written first to the same path plus ``.admin-token``
            (readable by the owner only), so that the token is there once the port is.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await self._astart()
        try:
            if self._admin_token is not None:
                self._announce_admin_token(port_file)
            if port_file:
                _write_whole(port_file, f"{self.port}\n")
            print(f"Dropbox Sign emulator serving {self.base_url}", flush=True)
            await stop.wait()
        finally:
            await self._astop()

    def _announce_admin_token(self, port_file: str | None) -> None:
        """Tell where the admin token is, once, on stderr: stdout holds only the line scripts read."""
        token = self._admin_token
        assert token is not None
        if port_file:
            token_file = f"{port_file}.admin-token"
            _write_whole(token_file, f"{token}\n", mode=0o600)
            where = f"is in {token_file}"
        elif self._admin_token_generated:
            where = f"is {token}"
        else:
            where = "is the one given (admin_token, --admin-token)"
        print(
            f"Admin API token {where}: send it in the {ADMIN_TOKEN_HEADER} header.",
            file=sys.stderr,
            flush=True,
        )


def _write_whole(path: str, text: str, mode: int = 0o666) -> None:
    """Write a file aside then rename it, so that a script polling it never reads half of it."""
    partial = f"{path}.partial"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def _parse_query(query: str) -> _Predicate:
    """
    Turn a search query into one predicate on the stored body, refusing what the emulator cannot honour.

    :param query: the ``query`` parameter of ``GET /signature_request/list``.
    :return: whether a stored body matches; every body matches an empty query.
    :raises _ApiError: 400 naming the first part the emulator does not understand.
    """
    if not query.strip():
        return lambda body: True
    # Undocumented (parentheses in a query): grouping is never mentioned, so a parenthesis is left
    # in its clause, which is then refused as unsupported.
    # The operators are case-sensitive, as the docs say: a lower-case "or" stays inside a clause,
    # which then fails to parse as the free term it is. AND binds tighter than OR, the usual
    # precedence, so the query is an OR of AND groups.
    groups = [
        [_parse_clause(clause.strip(), query) for clause in alternative.split(" AND ")]
        for alternative in query.split(" OR ")
    ]
    return lambda body: any(all(predicate(body) for predicate in group) for group in groups)


def _unsupported(part: str) -> _ApiError:
    return _ApiError(
        400,
        f"Unsupported search query {part!r}: this emulator supports complete:true|false, title:WORD, "
        "metadata:WORD and created:[YYYY-MM-DD TO YYYY-MM-DD] ({...} exclusive, * open) joined by "
        "' AND ' and ' OR ' (AND binds tighter; no parentheses).",
        path="query",
    )


def _parse_clause(clause: str, query: str) -> _Predicate:
    if not clause:
        raise _unsupported(query)
    field_name, _, value = clause.partition(":")
    if field_name == "complete" and value in ("true", "false"):
        wanted = value == "true"
        return lambda body: bool(body["is_complete"]) is wanted
    if field_name in ("title", "metadata") and _WORD_RE.fullmatch(value):
        # Undocumented (how title: and metadata: match): a case-insensitive substring, the most
        # forgiving reading of a search.
        needle = value.lower()
        if field_name == "title":
            return lambda body: needle in str(body["title"]).lower()
        return lambda body: any(needle in _metadata_text(item).lower() for item in body["metadata"].values())
    match = _CREATED_RE.fullmatch(clause)
    if match and (match.group(1), match.group(4)) in (("[", "]"), ("{", "}")):
        low, high = _date_bound(match.group(2), clause), _date_bound(match.group(3), clause)
        inclusive = match.group(1) == "["

        def created_in_range(body: dict[str, Any]) -> bool:
            day = datetime.datetime.fromtimestamp(int(body["created_at"]), tz=datetime.timezone.utc).date()
            if inclusive:
                return (low is None or day >= low) and (high is None or day <= high)
            return (low is None or day > low) and (high is None or day < high)

        return created_in_range
    raise _unsupported(clause)


def _date_bound(text: str, clause: str) -> datetime.date | None:
    if text == "*":
        return None
    if not _DATE_RE.fullmatch(text):
        raise _unsupported(clause)
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise _unsupported(clause) from None


def _metadata_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the emulator in the foreground until SIGINT or SIGTERM (console script ``dropbox-sign-emulator``).

    :param argv: command-line arguments, ``sys.argv[1:]`` when ``None``.
    :return: the exit status, 0 after a clean shutdown.
    """
    parser = argparse.ArgumentParser(
        prog="dropbox-sign-emulator", description="A local emulator of the Dropbox Sign API, for tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind, 0 = any free one (default 8000)"
    )
    parser.add_argument("--api-key", action="append", dest="api_keys", help="accepted API key (repeatable)")
    parser.add_argument(
        "--access-token", action="append", dest="access_tokens", help="accepted OAuth token (repeatable)"
    )
    parser.add_argument("--rate-limit", type=int, default=100, help="requests per window (default 100)")
    parser.add_argument("--window-seconds", type=float, default=60.0, help="rate-limit window (default 60)")
    parser.add_argument(
        "--cancel-delay", type=float, default=2.0, help="seconds until a cancellation completes (default 2)"
    )
    parser.add_argument("--callback-url", help="where signature_request_canceled events are POSTed")
    parser.add_argument("--port-file", help="write the bound port to this file once serving")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not a loopback address; the admin API then requires a token "
        f"in the {ADMIN_TOKEN_HEADER} header (generated unless --admin-token is given; written to "
        "PORT_FILE.admin-token with --port-file, else printed once to stderr)",
    )
    parser.add_argument(
        "--admin-token",
        help="the admin API token to require (other local users can read it in the process list: "
        "prefer the generated one)",
    )
    args = parser.parse_args(argv)
    try:
        emulator = DropboxSignEmulator(
            api_keys=args.api_keys or ("test-key",),
            access_tokens=args.access_tokens or ("test-token",),
            rate_limit=args.rate_limit,
            window_seconds=args.window_seconds,
            cancel_delay=args.cancel_delay,
            callback_url=args.callback_url,
            host=args.host,
            port=args.port,
            allow_remote=args.allow_remote,
            admin_token=args.admin_token,
        )
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(emulator.serve_forever(args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
