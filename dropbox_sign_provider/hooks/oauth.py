"""
OAuth access tokens of an API app's connection, shared by both hooks: when to refresh, what to
send, how to read the answer and which refresh token to use. It sends nothing and sleeps on no
clock of its own: each hook sends (:mod:`dropbox_sign_provider.hooks.transport`), waits, and reads
and writes the rotated refresh token (:mod:`dropbox_sign_provider.hooks.refresh_token_store`).

A refresh is ``POST <oauth_refresh_url>?refresh`` (Dropbox Sign's ``oauthTokenRefresh``, on
``app.hellosign.com``, not on the API's host) with ``grant_type=refresh_token``, the refresh token
and the app's ``client_id`` and ``client_secret``; the answer carries ``access_token``,
``expires_in``, ``refresh_token``, ``token_type`` and ``state``.

Where Dropbox Sign says nothing, this module assumes the least: that a refresh may answer a new
refresh token (rotation) and that the one it replaced may stop working at once. So the newest
refresh token is kept where every process finds it (an Airflow Variable per connection), read
before each refresh; and a refresh refused with ``invalid_grant`` reads it again and tries once
more when another process has rotated it meanwhile.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import threading
import weakref
from dataclasses import dataclass, field

from dropbox_sign_provider import DEFAULT_OAUTH_TOKEN_URL
from dropbox_sign_provider.exceptions import (
    DropboxSignConnectionError,
    DropboxSignError,
    DropboxSignOAuthClientError,
    DropboxSignOAuthError,
    DropboxSignRefreshTokenError,
    DropboxSignTokenHostError,
    DropboxSignTransportError,
    error_from_response,
)
from dropbox_sign_provider.hooks.connection import OAuthApp
from dropbox_sign_provider.hooks.policy import RetryPolicy

#: The Variable that keeps a connection's newest refresh token is this prefix and the conn id. Its
#: name holds "token", one of the words Airflow's secrets masker hides the value of.
REFRESH_TOKEN_VARIABLE_PREFIX = "dropbox_sign_refresh_token__"  # noqa: S105 - a name
#: An access token is renewed this long before it expires, or a tenth of its lifetime when that is
#: shorter: a call must not leave with a token that expires on its way.
RENEW_MARGIN_SECONDS = 60.0
_RENEW_MARGIN_SHARE = 0.1
#: Seconds between a refresh refused with ``invalid_grant`` and the second read of the Variable;
#: when it holds nothing newer yet, it is read again ``REREADS`` times, each wait twice as long.
REREAD_DELAY_SECONDS = 1.0
REREADS = 3
#: The path refresh calls are described by in errors and logs (never the query or the body).
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path


def refresh_token_variable(conn_id: str) -> str:
    """The Airflow Variable that keeps the newest refresh token of ``conn_id``."""
    return f"{REFRESH_TOKEN_VARIABLE_PREFIX}{conn_id}"


@dataclass(frozen=True)
class AccessToken:
    """An access token and the Unix time after which it is renewed before use."""

    value: str = field(repr=False)
    renew_at: float

    def usable(self, now: float) -> bool:
        """Whether a call may still leave with it."""
        return now < self.renew_at


def renew_at(obtained_at: float, expires_in: float) -> float:
    """When a token obtained at ``obtained_at`` and living ``expires_in`` seconds is renewed."""
    return obtained_at + expires_in - min(RENEW_MARGIN_SECONDS, _RENEW_MARGIN_SHARE * expires_in)


@dataclass(frozen=True)
class Refreshed:
    """
    A refresh that succeeded.

    :param token: the new access token.
    :param rotated: the new refresh token when the answer's differs from the one sent, else ``None``.
    """

    token: AccessToken
    rotated: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Retry:
    """
    A refresh to send again after ``delay`` seconds; when ``reread``, with the refresh token the
    connection's Variable holds once they passed (see :meth:`RefreshAttempt.newer`).
    """

    delay: float = 0.0
    reread: bool = False


class TokenKeeper:
    """
    The access token of one API app's connection in this process, shared by every hook of the
    process (:func:`token_keeper`): a thousand triggers of one triggerer refresh once, not a
    thousand times.

    :param conn_id: the connection's id, named by every error.
    :param app: the connection's app credentials.
    :param policy: how refreshes are retried after transient failures (as API calls are).
    """

    def __init__(self, conn_id: str, app: OAuthApp, policy: RetryPolicy) -> None:
        self.conn_id = conn_id
        self.app = app
        self.policy = policy
        self.current: AccessToken | None = None
        # The newest refresh token this process got from a refresh (None: none rotated here).
        self.latest_refresh_token: str | None = None
        # A refusal that no retry can change, and the refresh token it refused: raised again at
        # once while that token is still the newest, so that a run of a thousand ids fails fast
        # instead of asking the token endpoint (and waiting for the Variable) once per id.
        self._refused: tuple[str, DropboxSignOAuthError] | None = None
        #: refreshes this process made (answered 200), for the task log and the tests' figures
        self.refreshes = 0
        #: held by a thread that refreshes, so that the others wait and reuse its token
        self.lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def async_lock(self) -> asyncio.Lock:
        """The lock of the running event loop: one trigger refreshes, the others wait and reuse."""
        return self._async_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())

    def usable(self, now: float) -> str | None:
        """The access token a call may leave with now, or ``None`` when a refresh is due."""
        return self.current.value if self.current is not None and self.current.usable(now) else None

    def rejected(self, value: str) -> None:
        """The API answered 401 to ``value``: the next call refreshes (unless another already did)."""
        if self.current is not None and self.current.value == value:
            self.current = None

    def start(self, stored: str | None, rng: random.Random) -> RefreshAttempt:
        """
        Begin a refresh with the newest refresh token known: the Variable's (``stored``, what
        another process may have rotated to), else the one this process rotated to, else the
        connection's.

        :raises DropboxSignOAuthError: the refusal of that very refresh token, again.
        """
        refresh_token = stored or self.latest_refresh_token or self.app.refresh_token
        if self._refused is not None and self._refused[0] == refresh_token:
            raise copy.copy(self._refused[1])  # a fresh one: each raise adds to its traceback
        return RefreshAttempt(self, refresh_token, rng)

    def refused(self, refresh_token: str, error: DropboxSignOAuthError) -> DropboxSignOAuthError:
        """Remember a final refusal of ``refresh_token``; returns ``error`` to raise."""
        self._refused = (refresh_token, error)
        return error


class RefreshAttempt:
    """
    The sends of one refresh. The hooks' loops send :attr:`fields` to :attr:`url` and hand it each
    answer (:meth:`answered`) or failure (:meth:`failed`); it returns :class:`Refreshed`, asks for
    a :class:`Retry`, or raises a typed error that names the connection and never a secret.
    """

    method = "POST"
    path = TOKEN_PATH

    def __init__(self, keeper: TokenKeeper, refresh_token: str, rng: random.Random) -> None:
        self._keeper = keeper
        self._rng = rng
        self._retries = 0
        self._reread = False
        self._rereads = 0
        self.refresh_token = refresh_token
        #: where the refresh goes: Dropbox Sign's documented ``?refresh`` form of the token endpoint
        self.url = f"{keeper.app.token_url}?refresh"

    @property
    def fields(self) -> dict[str, str]:
        """The body (JSON, as ``OAuthTokenRefreshRequest`` declares it)."""
        app = self._keeper.app
        return {
            "grant_type": "refresh_token",
            "refresh_token": self.refresh_token,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        }

    def answered(self, status: int, body: bytes, now: float) -> Refreshed | Retry:
        """Handle an answer of the token endpoint; a success is kept by the connection's keeper."""
        if 200 <= status < 300:
            return self._refreshed(body, now)
        name = _error_name(body)
        if name == "invalid_client" or (status == 401 and name != "invalid_grant"):
            raise self._keeper.refused(
                self.refresh_token,
                DropboxSignOAuthClientError(
                    status,
                    name or "invalid_client",
                    f"connection {self._keeper.conn_id!r}: Dropbox Sign refused the API app's client_id "
                    "or client_secret; check both in the connection against the app's settings on "
                    "Dropbox Sign",
                    method=self.method,
                    path=self.path,
                ),
            )
        if name == "invalid_grant":
            if not self._reread:
                # Another process may have rotated the refresh token since it was read: read again,
                # after a moment in which that process writes the Variable it answered.
                self._reread = True
                return Retry(delay=REREAD_DELAY_SECONDS, reread=True)
            raise self._refresh_token_refused(status, name)
        error = error_from_response(status, body, method=self.method, path=self.path)
        if error.retryable:
            return self._retry_or_raise(error)
        raise DropboxSignOAuthError(
            status,
            error.error_name,
            f"connection {self._keeper.conn_id!r}: the token endpoint refused the refresh "
            f"({error.error_msg}); check the connection's oauth_refresh_url and the app's settings",
            method=self.method,
            path=self.path,
        )

    def failed(self, error: DropboxSignError) -> Retry:
        """Handle a send that got no answer: retried by the policy, then raised as unreachable."""
        return self._retry_or_raise(error)

    def newer(self, stored: str | None) -> Retry | None:
        """
        After ``invalid_grant``: send again (``None``) with ``stored``, the Variable's refresh token
        read again, when it differs from the refused one; else read again after a longer moment
        (the process that rotated it may still be writing it), a few times.

        :raises DropboxSignRefreshTokenError: when nothing newer came.
        """
        newest = stored or self._keeper.latest_refresh_token
        if newest and newest != self.refresh_token:
            self.refresh_token = newest
            return None
        if self._rereads >= REREADS:
            raise self._refresh_token_refused(400, "invalid_grant")
        self._rereads += 1
        return Retry(delay=REREAD_DELAY_SECONDS * 2**self._rereads, reread=True)

    def _retry_or_raise(self, error: DropboxSignError) -> Retry:
        delay = self._keeper.policy.retry_delay(self._retries, error, self._rng)
        if delay is None:
            host = self._keeper.app.token_url.split("//", 1)[-1].split("/", 1)[0]
            if isinstance(error, DropboxSignConnectionError | DropboxSignTransportError):
                raise DropboxSignTokenHostError(
                    None,
                    error.error_name,
                    f"connection {self._keeper.conn_id!r}: the token endpoint {host} could not be "
                    f"reached ({error.error_msg}); check the connection's oauth_refresh_url (default "
                    f"{DEFAULT_OAUTH_TOKEN_URL}) and that workers and triggerers may reach it",
                    method=self.method,
                    path=self.path,
                ) from error
            raise DropboxSignTokenHostError(
                error.status_code,
                error.error_name,
                f"connection {self._keeper.conn_id!r}: the token endpoint {host} kept failing "
                f"({error.error_msg}); try again later",
                method=self.method,
                path=self.path,
            ) from error
        self._retries += 1
        return Retry(delay=delay)

    def _refresh_token_refused(self, status: int, name: str) -> DropboxSignOAuthError:
        conn_id = self._keeper.conn_id
        return self._keeper.refused(
            self.refresh_token,
            DropboxSignRefreshTokenError(
                status,
                name,
                f"connection {conn_id!r}: Dropbox Sign refused the refresh token (revoked, unknown or "
                "replaced); authorize the app again and put its new refresh token in the connection, "
                f"then delete the Variable {refresh_token_variable(conn_id)}",
                method=self.method,
                path=self.path,
            ),
        )

    def _refreshed(self, body: bytes, now: float) -> Refreshed:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        access = answer.get("access_token") if isinstance(answer, dict) else None
        expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
        if (
            not isinstance(access, str)
            or not access
            or not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
            or expires_in <= 0
        ):
            raise DropboxSignOAuthError(
                200,
                "invalid_response",
                f"connection {self._keeper.conn_id!r}: the token endpoint's answer has no "
                "access_token and expires_in; is oauth_refresh_url Dropbox Sign's token endpoint?",
                method=self.method,
                path=self.path,
            )
        assert isinstance(answer, dict)
        new_refresh = answer.get("refresh_token")
        rotated = new_refresh if isinstance(new_refresh, str) and new_refresh != self.refresh_token else None
        keeper = self._keeper
        token = AccessToken(access, renew_at(now, float(expires_in)))
        keeper.current = token
        keeper.refreshes += 1
        if rotated:
            keeper.latest_refresh_token = rotated
        return Refreshed(token, rotated)


def _error_name(body: bytes) -> str:
    # Dropbox Sign's error envelope ({"error": {"error_name": ...}}) or RFC 6749's ({"error": ...}):
    # which one its token endpoint answers is not documented.
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("error_name") or "")
    return error if isinstance(error, str) else ""


_KEEPERS: dict[tuple[str, OAuthApp], TokenKeeper] = {}
_KEEPERS_LOCK = threading.Lock()


def token_keeper(conn_id: str, app: OAuthApp, policy: RetryPolicy) -> TokenKeeper:
    """The process-wide keeper of ``conn_id``'s access token (a new one when the connection changed)."""
    with _KEEPERS_LOCK:
        keeper = _KEEPERS.get((conn_id, app))
        if keeper is None:
            keeper = _KEEPERS[(conn_id, app)] = TokenKeeper(conn_id, app, policy)
        return keeper


def forget_tokens() -> None:
    """Drop every process-wide access token (for tests that start a fresh process)."""
    with _KEEPERS_LOCK:
        _KEEPERS.clear()


def secrets_of(refreshed: Refreshed) -> tuple[str, ...]:
    """What a refresh answered that must be masked: the access token, the rotated refresh token."""
    return (refreshed.token.value, *((refreshed.rotated,) if refreshed.rotated else ()))
