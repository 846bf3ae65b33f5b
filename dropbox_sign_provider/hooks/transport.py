"""
How one attempt of a call goes over the wire: with ``requests`` for the tasks'
:class:`~dropbox_sign_provider.hooks.dropbox_sign.DropboxSignHook`, with ``aiohttp`` for the
triggers' :class:`~dropbox_sign_provider.hooks.dropbox_sign.DropboxSignAsyncHook`.

Each reads an answer's body up to :data:`~dropbox_sign_provider.hooks.call.MAX_RESPONSE_BYTES` and
one piece past it, never more, and decides in one place what its client's failures mean
(:func:`_no_answer`): a typed error, retried or not.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import requests

from dropbox_sign_provider.exceptions import (
    DropboxSignConnectionError,
    DropboxSignError,
    DropboxSignTLSError,
    DropboxSignTransportError,
)
from dropbox_sign_provider.hooks.call import MAX_RESPONSE_BYTES, _Call
from dropbox_sign_provider.hooks.oauth import RefreshAttempt

# Bodies are read in pieces of this size, so an oversized one is never held whole.
_CHUNK_BYTES = 64 * 2**10


class _Target(Protocol):
    # What a failure is described by: an API call, or a refresh at the token endpoint.
    method: str
    path: str
    url: str


def _no_answer(call: _Target, reason: BaseException, transient: bool) -> DropboxSignError:
    """
    The typed error for an HTTP client's failure to get an answer to ``call``, raised to the send
    loop, which hands it to :meth:`_Call.failed` to retry or raise.

    :param reason: the client's exception.
    :param transient: whether the client's failure is of a kind another attempt may not meet
        (connection refused or dropped, a timeout, a body cut short); TLS failures never are.
    """
    tls = _tls_failure(reason)
    if tls is not None:
        return DropboxSignTLSError(
            None,
            "tls_error",
            f"TLS handshake with {urlsplit(call.url).netloc} failed ({tls}): is the host an "
            "https:// server, and is the CA bundle (extra verify) right? A host without a scheme "
            "means https://",
            method=call.method,
            path=call.path,
        )
    if transient:
        return DropboxSignConnectionError(
            None, "connection_error", _describe(reason), method=call.method, path=call.path
        )
    return DropboxSignTransportError(
        None,
        "transport_error",
        f"{_describe(reason)}; not retried, as another attempt would fail the same way",
        method=call.method,
        path=call.path,
    )


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

    :raises DropboxSignError: what the client's failure means (:func:`_no_answer`).
    """
    try:
        with session.request(
            call.method,
            call.url,
            params=params,
            headers=_authorization(call),
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        ) as response:
            return (
                response.status_code,
                response.headers,
                _read_up_to_cap(response.iter_content(_CHUNK_BYTES)),
            )
    except requests.RequestException as exc:
        raise _no_answer(call, exc, transient=isinstance(exc, _REQUESTS_TRANSIENT)) from exc


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
        async with session.request(
            call.method, call.url, params=params, headers=_authorization(call), allow_redirects=False
        ) as response:
            body = bytearray()
            while len(body) <= MAX_RESPONSE_BYTES:
                piece = await response.content.read(_CHUNK_BYTES)
                if not piece:
                    break
                body += piece
            return response.status, response.headers, bytes(body)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        transient = isinstance(exc, _AIOHTTP_TRANSIENT) and not isinstance(exc, aiohttp.TooManyRedirects)
        raise _no_answer(call, exc, transient=transient) from exc


def _authorization(call: _Call) -> dict[str, str] | None:
    # An API app's access token changes as it is refreshed: sent with each call, not by the session.
    return {"Authorization": f"Bearer {call.access_token}"} if call.access_token else None


def _refresh_with_requests(
    session: requests.Session, attempt: RefreshAttempt, timeout: float
) -> tuple[int, bytes]:
    """
    Send one refresh of an access token: the answer's status and body, or a typed error. The
    session's own ``Authorization`` (none, on an API app's connection) is not sent.

    :raises DropboxSignError: what the client's failure means (:func:`_no_answer`).
    """
    try:
        with session.post(
            attempt.url,
            json=attempt.fields,
            headers={"Authorization": None},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        ) as response:
            return response.status_code, _read_up_to_cap(response.iter_content(_CHUNK_BYTES))
    except requests.RequestException as exc:
        raise _no_answer(attempt, exc, transient=isinstance(exc, _REQUESTS_TRANSIENT)) from exc


async def _refresh_with_aiohttp(session: aiohttp.ClientSession, attempt: RefreshAttempt) -> tuple[int, bytes]:
    """Async :func:`_refresh_with_requests`, the timeout being the session's."""
    try:
        async with session.post(attempt.url, json=attempt.fields, allow_redirects=False) as response:
            return response.status, await response.content.read(MAX_RESPONSE_BYTES + 1)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        transient = isinstance(exc, _AIOHTTP_TRANSIENT) and not isinstance(exc, aiohttp.TooManyRedirects)
        raise _no_answer(attempt, exc, transient=transient) from exc


def _describe(reason: BaseException) -> str:
    # Exception texts of HTTP clients carry the URL, never headers; the type says what happened
    # when the text is empty (a dropped connection often has none).
    text = str(reason).strip()
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
