"""
Typed errors of the Dropbox Sign API.

One class per documented ``error_name``, so callers write ``except DropboxSignNotFoundError``
instead of parsing messages. Every error carries what the API said and the request it answered;
none of them ever holds a credential (requests are described by method and path only).

Each class also says, once and on its ``class`` line, what it means (in the manner of stripe's
errors): the HTTP status it stands for, whether another attempt may succeed (``retryable``), and
which state of the signature request it tells, if any (``state``). The retry policy, the state
decision and the operator's reading of a refused cancel are all derived from these three
attributes: adding a status is adding a class here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from dropbox_sign_provider.cancellation.state import RequestState


class DropboxSignError(Exception):
    """
    An error answered by the Dropbox Sign API, or a failure to reach it.

    What a class means is said by three class attributes: :attr:`http_status`, :attr:`retryable`
    and :attr:`state`.

    :param status_code: HTTP status of the answer (``None`` when no answer arrived).
    :param error_name: the API's ``error_name`` (for example ``deleted``), or a local one.
    :param error_msg: the API's ``error_msg``.
    :param error_path: the API's ``error_path``, naming the offending parameter, if any.
    :param method: HTTP method of the request.
    :param path: path of the request below the API base URL, without the query string.
    """

    #: the HTTP status this class stands for; ``None`` for failures that are not one status
    http_status: ClassVar[int | None] = None
    #: whether the hooks try again: the failure says nothing of the request (429, 5xx, no answer)
    retryable: ClassVar[bool] = False
    #: the state of the signature request this answer tells; ``None`` when it tells none, which
    #: makes it a problem to report, not a state to wait on (400, 402, a redirect, TLS, ...)
    state: ClassVar[RequestState | None] = None

    def __init_subclass__(
        cls,
        *,
        http_status: int | None = None,
        retryable: bool | None = None,
        state: RequestState | None = None,
        **kwargs: Any,
    ) -> None:
        # What a class means is declared on its ``class`` line; what it does not say, it inherits.
        super().__init_subclass__(**kwargs)
        if http_status is not None:
            cls.http_status = http_status
        if retryable is not None:
            cls.retryable = retryable
        if state is not None:
            cls.state = state

    def __init__(
        self,
        status_code: int | None,
        error_name: str,
        error_msg: str,
        *,
        error_path: str | None = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_name = error_name
        self.error_msg = error_msg
        self.error_path = error_path
        self.method = method
        self.path = path
        #: seconds until the rate-limit window resets, when the answer said so
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method else ""
        status = f"HTTP {self.status_code} " if self.status_code is not None else ""
        param = f" [parameter: {self.error_path}]" if self.error_path else ""
        return f"Dropbox Sign {status}{self.error_name}: {self.error_msg}{param}{where}"

    def told_state(self) -> RequestState:
        """
        The state of the signature request this answer tells.

        :raises DropboxSignError: this error itself, when it tells none: a problem to report, not a
            state to wait on.
        """
        if self.state is None:
            raise self
        return self.state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, error_name={self.error_name!r}, "
            f"error_msg={self.error_msg!r}, method={self.method!r}, path={self.path!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are lost by the default pickling of exceptions, which Airflow uses
        # when it moves a task's failure between processes.
        return (
            _rebuild,
            (
                type(self),
                self.status_code,
                self.error_name,
                self.error_msg,
                self.error_path,
                self.method,
                self.path,
                self.retry_after,
            ),
        )


def _rebuild(cls: type[DropboxSignError], *args: Any) -> DropboxSignError:
    status, name, msg, error_path, method, path, retry_after = args
    return cls(status, name, msg, error_path=error_path, method=method, path=path, retry_after=retry_after)


class DropboxSignBadRequestError(DropboxSignError, http_status=400):
    """400 ``bad_request``: a parameter was wrong (``error_path`` names it)."""


class DropboxSignUnauthorizedError(DropboxSignError, http_status=401, state=RequestState.UNAUTHORIZED):
    """401 ``unauthorized``: the API key or access token is missing, wrong or revoked."""


class DropboxSignPaymentRequiredError(DropboxSignError, http_status=402):
    """402 ``payment_required``: the account's plan does not allow this call."""


class DropboxSignForbiddenError(DropboxSignError, http_status=403, state=RequestState.FORBIDDEN):
    """403 ``forbidden``: the credentials may not act on this resource (not the sender or app owner)."""


class DropboxSignNotFoundError(DropboxSignError, http_status=404, state=RequestState.NOT_FOUND):
    """404 ``not_found``: no such resource for this account."""


class DropboxSignConflictError(DropboxSignError, http_status=409, state=RequestState.CANCEL_REQUESTED):
    """
    409 ``conflict``: an identical request is already being processed. For a cancel, one is in
    flight: as good as one accepted.
    """


class DropboxSignDeletedError(DropboxSignError, http_status=410, state=RequestState.CANCELED):
    """410 ``deleted``: the resource is gone; for a signature request, its cancellation has taken effect."""


class DropboxSignRateLimitError(
    DropboxSignError, http_status=429, retryable=True, state=RequestState.TRANSIENT
):
    """429 ``exceeded_rate``: the account's rate limit is spent until the window resets."""


class DropboxSignServerError(DropboxSignError, retryable=True, state=RequestState.TRANSIENT):
    """5xx: Dropbox Sign failed to answer the request; retried with backoff before it is raised."""


class DropboxSignConnectionError(DropboxSignError, retryable=True, state=RequestState.TRANSIENT):
    """No answer arrived: connection refused or dropped, or the call timed out."""


class DropboxSignDeadlineError(DropboxSignError, state=RequestState.TRANSIENT):
    """
    The call was not sent: it could not go out before its deadline (waiting for the account's rate
    limit or for a retry would have taken it past). Says nothing about the request itself, and is
    not retried: the deadline is the caller's to keep.
    """


class DropboxSignResponseError(DropboxSignError, retryable=True, state=RequestState.TRANSIENT):
    """An answer arrived but could not be read (not JSON, or not the documented shape)."""


class DropboxSignRedirectError(DropboxSignError):
    """
    A 3xx or 1xx where only a 2xx is an answer: a redirect, a ``304`` or an interim status, most
    likely from a proxy or a wrong host. Redirects are never followed and this is never retried:
    the call may be an irreversible cancel, and sending it again (or elsewhere) cannot be undone.
    """


class DropboxSignResponseTooLargeError(DropboxSignError):
    """
    The answer's body was larger than the hooks read (``MAX_RESPONSE_BYTES``): not an answer of
    Dropbox Sign's API. Never retried; the body was read only up to the limit.
    """


class DropboxSignTransportError(DropboxSignError):
    """
    The HTTP client failed in a way another attempt would not fix: an invalid URL, a redirect loop,
    or a client error of no known transient kind. Raised at once, never retried.
    """


class DropboxSignTLSError(DropboxSignTransportError):
    """
    The TLS handshake or the server's certificate failed: a host that does not speak https, or a
    certificate the CA bundle does not trust. Raised at once, never retried.
    """


class DropboxSignOAuthError(DropboxSignError):
    """
    An API app's access token could not be refreshed (``POST /oauth/token?refresh``). Its message
    names the connection and what to do, never a token or secret. Not retried: transient failures
    of the token endpoint were retried before it was raised.
    """


class DropboxSignRefreshTokenError(DropboxSignOAuthError):
    """``invalid_grant``: the refresh token is revoked, unknown or was replaced; authorize the app again."""


class DropboxSignOAuthClientError(DropboxSignOAuthError):
    """``invalid_client``: the connection's ``client_id`` or ``client_secret`` is wrong."""


class DropboxSignTokenHostError(DropboxSignOAuthError):
    """The token endpoint could not be reached, or kept failing, through every retry."""


def _subclasses(cls: type[DropboxSignError]) -> list[type[DropboxSignError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


_BY_STATUS: dict[int, type[DropboxSignError]] = {
    cls.http_status: cls for cls in _subclasses(DropboxSignError) if cls.http_status is not None
}


#: ``error_name``s more specific than the status they come with: whatever the status, they mean this
#: (the error reference: ``exceeded_rate`` is the rate limit; ``maintenance`` and ``unavailable``
#: are temporary, to retry with backoff).
_BY_NAME: dict[str, type[DropboxSignError]] = {
    "exceeded_rate": DropboxSignRateLimitError,
    "maintenance": DropboxSignServerError,
    "unavailable": DropboxSignServerError,
}


def error_from_response(
    status_code: int,
    body: bytes,
    *,
    method: str,
    path: str,
    retry_after: float | None = None,
    location: str | None = None,
) -> DropboxSignError:
    """
    Build the typed error for an answer whose status is not 2xx.

    The class follows the HTTP status, which the API documents per ``error_name``, or the
    ``error_name`` where it is more specific (``exceeded_rate``, ``maintenance``, ``unavailable``);
    a body that is not the documented envelope (an HTML page from a proxy, say) still gives a typed
    error. A 1xx or 3xx is a :class:`DropboxSignRedirectError` naming the host the answer pointed to.

    :param status_code: HTTP status of the answer (anything but 2xx).
    :param body: raw answer body.
    :param method: HTTP method of the request.
    :param path: request path below the API base URL.
    :param retry_after: seconds until the rate-limit window resets, if known.
    :param location: the answer's ``Location`` header, if any; only its host is ever shown.
    """
    if status_code < 400:
        return _redirect_error(status_code, location, method=method, path=path)
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = DropboxSignServerError if status_code >= 500 else DropboxSignError
    error = _error_envelope(body)
    name = str(error.get("error_name") or _fallback_name(status_code))
    cls = _BY_NAME.get(name, cls)
    msg = str(error.get("error_msg") or _body_excerpt(body) or "no error message in the answer")
    error_path = error.get("error_path")
    return cls(
        status_code,
        name,
        msg,
        error_path=str(error_path) if error_path else None,
        method=method,
        path=path,
        retry_after=retry_after,
    )


def _redirect_error(status_code: int, location: str | None, *, method: str, path: str) -> DropboxSignError:
    if 300 <= status_code < 400:
        name, what = "redirect", f"redirected to {_location_host(location)}"
    else:
        name, what = "unexpected_status", "an interim status as the final answer"
    return DropboxSignRedirectError(
        status_code,
        name,
        f"the answer was {what}; only a 2xx is an answer and redirects are not followed, as sending "
        "the call again elsewhere could repeat an irreversible cancel. Check the connection's host: "
        "is it Dropbox Sign's API (https://api.hellosign.com), or is a proxy answering for it?",
        method=method,
        path=path,
    )


def _location_host(location: str | None) -> str:
    # The host only: a Location may carry a user name and password, or a token in its query.
    if not location or not location.strip():
        return "no Location"
    try:
        parts = urlsplit(location.strip())
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return "an unreadable Location"
    if not hostname:
        return "a path on the same host"
    host = f"[{hostname}]" if ":" in hostname else hostname
    return repr(f"{host}:{port}" if port else host)


def parse_json_body(status_code: int, body: bytes, *, method: str, path: str) -> dict[str, Any]:
    """
    Read a successful answer's JSON object; an empty body reads as ``{}``.

    The cancel call answers 200 with ``{}`` in the reference and an "empty" body in the prose,
    so both are accepted.

    :raises DropboxSignResponseError: when the body is not a JSON object.
    """
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise DropboxSignResponseError(
            status_code,
            "invalid_response",
            f"expected a JSON object, got {_body_excerpt(body)!r}",
            method=method,
            path=path,
        )
    return data


def _error_envelope(body: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _fallback_name(status_code: int) -> str:
    return "server_error" if status_code >= 500 else f"http_{status_code}"


def _body_excerpt(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text[:limit] + ("..." if len(text) > limit else "")
