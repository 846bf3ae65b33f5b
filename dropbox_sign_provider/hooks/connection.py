"""
The ``dropbox_sign`` connection: where its credential is, and the settings a hook reads from it,
checked once (:class:`ApiSettings`, :func:`settings_from_connection`).

The callback receiver reads the API key of its accounts' connections with the same
:func:`api_key_from_connection`, so the hooks and the receiver agree on what the key is.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import SplitResult, urlsplit

from dropbox_sign_provider import (
    DEFAULT_CONN_NAME,
    DEFAULT_HOST,
    DEFAULT_MAX_REQUESTS_PER_MINUTE,
    DEFAULT_OAUTH_TOKEN_URL,
    DEFAULT_TIMEOUT_SECONDS,
)
from dropbox_sign_provider.cancellation.grants import derive_key

if TYPE_CHECKING:
    from airflow.sdk import Connection


@dataclass(frozen=True)
class OAuthApp:
    """
    An API app's credentials, as a ``dropbox_sign`` connection holds them (secrets out of ``repr``).

    :param token_url: where tokens are refreshed (without ``?refresh``).
    :param client_id: the app's client id.
    :param client_secret: the app's client secret.
    :param refresh_token: the refresh token the connection holds; a newer one may be in the
        connection's Variable
        (:func:`~dropbox_sign_provider.hooks.oauth.refresh_token_variable`).
    """

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


class _WithPassword(Protocol):
    # An Airflow connection as the Task SDK and the API server (airflow.models) each read it.
    @property
    def password(self) -> str | None: ...


@dataclass(frozen=True)
class ApiSettings:
    """
    Everything a hook needs from a ``dropbox_sign`` connection, checked once.

    :param conn_id: the connection's id.
    :param base_url: API base URL, ending in ``/v3``.
    :param authorization: value of the ``Authorization`` header (kept out of ``repr``); empty for
        an API app's connection, whose header carries an access token refreshed as it goes.
    :param timeout: seconds allowed for every HTTP call.
    :param max_requests_per_minute: client-side budget of the account in this process.
    :param verify: TLS verification: ``True``, ``False`` or a CA bundle path.
    :param oauth: the API app's credentials, for a connection that refreshes its access tokens.
    """

    conn_id: str
    base_url: str
    authorization: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_requests_per_minute: int = DEFAULT_MAX_REQUESTS_PER_MINUTE
    verify: bool | str = True
    oauth: OAuthApp | None = None

    @property
    def credential(self) -> str:
        """
        What the connection authenticates with, as one text: the ``Authorization`` header, or an
        API app's client and connection refresh token. The budget of the account and the grants'
        signing key derive from it; it is never sent as it is.
        """
        if self.oauth is None:
            return self.authorization
        app = self.oauth
        return f"OAuth {app.token_url}\0{app.client_id}\0{app.client_secret}\0{app.refresh_token}"


def api_key_from_connection(conn: _WithPassword) -> str:
    """
    The API key a ``dropbox_sign`` connection holds: its password, as it is sent (without the
    surrounding white space a paste brings); empty when it holds none (an OAuth connection keeps
    its ``access_token`` in the extra instead).

    :param conn: the Airflow connection, as a task, a trigger or the API server reads it.
    """
    return (conn.password or "").strip()


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


def _is_host_name(hostname: str) -> bool:
    # Both HTTP clients encode the host with IDNA, and fail with errors of their own (urllib3's
    # LocationParseError, a bare UnicodeError) on a label that is empty or over 63 characters.
    try:
        hostname.encode("idna")
    except UnicodeError:
        return False
    return True


_SCHEME = re.compile(r"^https?://", re.IGNORECASE)


def _without_userinfo(host: str) -> str:
    # A password typed into the host must not reach the error that refuses it, and may itself hold
    # "/", ":", "#" or "@": of text with an "@", only what follows the last one is shown.
    if "@" not in host:
        return host
    scheme = _SCHEME.match(host)
    return f"{scheme.group(0) if scheme else ''}***@{host.rsplit('@', 1)[1]}"


def settings_from_connection(conn: Connection, *, named: bool = True) -> ApiSettings:
    """
    Read and check a ``dropbox_sign`` connection.

    * ``password``: the API key (sent as HTTP Basic ``key:``); or extra ``access_token`` (sent as
      Bearer). Exactly one of the two.
    * ``host``: default ``https://api.hellosign.com``; ``/v3`` is added when missing. Plain
      ``http://`` is refused for anything but a loopback address unless extra
      ``allow_insecure_http`` is true: the key would cross the network in clear.
    * or an API app's extra ``client_id``, ``client_secret`` and ``refresh_token`` (all three),
      whose access tokens are refreshed at extra ``oauth_refresh_url`` (default
      ``https://app.hellosign.com/oauth/token``; plain ``http://`` only on loopback unless
      ``allow_insecure_http``).
    * extra ``max_requests_per_minute`` (default 100), ``timeout`` (seconds, default 30),
      ``verify`` (TLS verification, default true; or a CA bundle path).

    :param conn: the Airflow connection.
    :param named: whether errors name the connection by its id; the UI's Test button checks a form
        under a random, temporary id, which would only puzzle whoever reads the message: it says
        "This connection" instead.
    :raises ValueError: naming the connection (see ``named``) and the bad field, never a secret's value.
    """
    conn_id = conn.conn_id
    subject = f"Connection {conn_id!r}" if named else "This connection"
    extra = conn.extra_dejson or {}
    api_key = api_key_from_connection(conn)
    token = str(_extra(extra, "access_token") or "").strip()
    app_fields = {name: str(_extra(extra, name) or "").strip() for name in _APP_FIELDS}
    if api_key and token:
        raise ValueError(f"{subject} has both an API key (password) and an access_token; set only one")
    if (api_key or token) and any(app_fields.values()):
        other = "API key (password)" if api_key else "access_token"
        raise ValueError(f"{subject} has an API app's fields and an {other}; set only one kind of credential")
    if not (api_key or token or any(app_fields.values())):
        raise ValueError(
            f"{subject} has no credentials: set the API key as the password, the access_token "
            "extra, or an API app's client_id, client_secret and refresh_token"
        )
    oauth = None
    if api_key:
        authorization = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
    elif token:
        authorization = f"Bearer {token}"
    else:
        missing = [name for name, value in app_fields.items() if not value]
        if missing:
            raise ValueError(
                f"{subject} is an API app's connection without {', '.join(missing)}: set "
                "client_id, client_secret and refresh_token"
            )
        authorization = ""
        oauth = OAuthApp(
            token_url=_token_url(subject, extra),
            client_id=app_fields["client_id"],
            client_secret=app_fields["client_secret"],
            refresh_token=app_fields["refresh_token"],
        )

    host = (conn.host or "").strip() or DEFAULT_HOST
    base_url = host if "://" in host else f"https://{host}"
    parts = _http_url(base_url)
    if parts is None:
        raise ValueError(
            f"{subject} has host {_without_userinfo(conn.host or '')!r}, which is not an "
            f"http(s) URL such as {DEFAULT_HOST!r}"
        )
    if conn.port and not parts.port:
        hostname = parts.hostname or ""  # _http_url checked there is one
        hostname = f"[{hostname}]" if ":" in hostname else hostname
        base_url = f"{parts.scheme}://{hostname}:{conn.port}{parts.path}"
    if _in_clear(parts, extra):
        raise ValueError(
            f"{subject} uses plain http:// to {parts.hostname!r}, which would send the "
            "credentials in clear; use https://, or set the extra allow_insecure_http to true"
        )
    base_url = base_url.rstrip("/")
    if not base_url.endswith("/v3"):
        base_url += "/v3"

    return ApiSettings(
        conn_id=conn_id,
        base_url=base_url,
        authorization=authorization,
        timeout=_positive_number(subject, "timeout", _extra(extra, "timeout"), DEFAULT_TIMEOUT_SECONDS),
        max_requests_per_minute=_whole_number(
            subject,
            "max_requests_per_minute",
            _extra(extra, "max_requests_per_minute"),
            DEFAULT_MAX_REQUESTS_PER_MINUTE,
        ),
        verify=_verify(extra),
        oauth=oauth,
    )


_APP_FIELDS = ("client_id", "client_secret", "refresh_token")


def _token_url(subject: str, extra: Mapping[str, Any]) -> str:
    # The token endpoint is on another host than the API (app.hellosign.com): checked as the host is.
    url = str(_extra(extra, "oauth_refresh_url") or "").strip() or DEFAULT_OAUTH_TOKEN_URL
    parts = _http_url(url)
    if parts is None:
        raise ValueError(
            f"{subject} has oauth_refresh_url {_without_userinfo(url)!r}, which is not an http(s) URL "
            f"such as {DEFAULT_OAUTH_TOKEN_URL!r}"
        )
    if _in_clear(parts, extra):
        raise ValueError(
            f"{subject} has oauth_refresh_url on plain http:// to {parts.hostname!r}, which would send "
            "the client secret in clear; use https://, or set the extra allow_insecure_http to true"
        )
    return url.rstrip("/")


def _http_url(url: str) -> SplitResult | None:
    """The parts of an http(s) URL both HTTP clients can send to, else ``None``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number or out of range
    except ValueError:  # or an unclosed IPv6 bracket
        return None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not _is_host_name(parts.hostname)
        or " " in url
        or not url.isprintable()
        # A query or fragment would end up in the middle of every URL; a user name and password
        # would be sent in place of the connection's credentials.
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        return None
    return parts


def _in_clear(parts: SplitResult, extra: Mapping[str, Any]) -> bool:
    # Plain http:// beyond loopback sends the credentials in clear, unless the connection says so.
    return (
        parts.scheme == "http"
        and not _is_loopback(parts.hostname or "")
        and not _as_bool(_extra(extra, "allow_insecure_http"))
    )


def _positive_number(subject: str, name: str, value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(f"{subject} has {name} {value!r}: expected a positive number")
    return number


def _whole_number(subject: str, name: str, value: Any, default: int) -> int:
    # int() of 0.5 is 0: a cap of no request at all, which stalls every caller of the account.
    number = _positive_number(subject, name, value, default)
    if number < 1 or number != int(number):
        raise ValueError(f"{subject} has {name} {value!r}: expected a whole number of 1 or more")
    return int(number)


def _verify(extra: Mapping[str, Any]) -> bool | str:
    value = _extra(extra, "verify")
    if value is None:
        return True
    if isinstance(value, str) and value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
        return value  # a CA bundle path
    return _as_bool(value)


def _secrets_of(settings: ApiSettings) -> tuple[str, ...]:
    # What is sent, as it is sent: the whole header, the credential in it and, for HTTP Basic, the
    # API key itself. Airflow masks the connection's password and access_token as it reads them,
    # but as they were stored: with the surrounding whitespace that is stripped before sending.
    if settings.oauth is not None:
        # The access tokens are masked as each refresh answers them.
        return settings.oauth.client_secret, settings.oauth.refresh_token
    scheme, credential = settings.authorization.split(" ", 1)
    if scheme == "Basic":
        api_key = base64.b64decode(credential).decode().removesuffix(":")
        return settings.authorization, credential, api_key
    return settings.authorization, credential


def grant_key(conn_id: str = DEFAULT_CONN_NAME) -> bytes:
    """
    The signing key of the grants a task hands on for ``conn_id``
    (:mod:`dropbox_sign_provider.cancellation.grants`), derived from the connection's credential,
    which is read and checked as the hooks check it: a bad connection is refused with the same
    words before any grant is made.

    :param conn_id: the ``dropbox_sign`` connection.
    """
    # Imported here: DAG files import the modules that import this one.
    from airflow.sdk import BaseHook

    return derive_key(settings_from_connection(BaseHook.get_connection(conn_id)).credential, conn_id)
