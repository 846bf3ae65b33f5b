"""
Who may reach the emulator, and with what: the address it binds, the credentials it accepts (and
those it refuses once reachable beyond loopback), the admin token's header, and the constant-time
checks of what a request carries.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import socket
from collections.abc import Iterable

#: The header that carries the admin token, when the admin API requires one (a name, not a secret).
ADMIN_TOKEN_HEADER = "X-Emulator-Token"  # noqa: S105
#: The credentials accepted unless others are given: documented, so anyone who can reach the
#: emulator knows them, which is why ``allow_remote`` refuses them.
DEFAULT_API_KEYS = ("test-key",)
DEFAULT_ACCESS_TOKENS = ("test-token",)


def is_loopback(host: str) -> bool:
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


def check_bind(host: str, allow_remote: bool) -> None:
    """
    Refuse to bind beyond loopback unless told to.

    :raises ValueError: for a ``host`` that is not a loopback address without ``allow_remote``.
    """
    if allow_remote or is_loopback(host):
        return
    raise ValueError(
        f"host {host!r} is not a loopback address: binding it would open the emulator's unprotected "
        "admin API (/_emulator/) to the network. Bind 127.0.0.1, or pass allow_remote=True "
        f"(--allow-remote) to bind it anyway, the admin API then requiring the {ADMIN_TOKEN_HEADER} header."
    )


def remote_credentials(
    allow_remote: bool, api_keys: Iterable[str] | None, access_tokens: Iterable[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """
    The API keys and access tokens to accept, defaults filled in.

    Reachable beyond loopback, the emulator must not accept the documented defaults: it then needs
    API keys of the operator's own, and accepts no access token unless given some.

    :raises ValueError: with ``allow_remote``, for no API key, an empty one or a documented default.
    """
    if not allow_remote:
        keys = DEFAULT_API_KEYS if api_keys is None else tuple(api_keys)
        return keys, DEFAULT_ACCESS_TOKENS if access_tokens is None else tuple(access_tokens)
    keys = tuple(api_keys or ())
    tokens = tuple(access_tokens or ())
    if not keys:
        raise ValueError(
            "allow_remote=True (--allow-remote) requires an explicit API key: without one the emulator "
            f"would accept the documented default {DEFAULT_API_KEYS[0]!r} from anyone who can reach it. "
            "Pass api_keys=(...) (--api-key KEY) with a key of your own"
        )
    known = [
        repr(value) for value in (*keys, *tokens) if value in (*DEFAULT_API_KEYS, *DEFAULT_ACCESS_TOKENS)
    ]
    if known:
        raise ValueError(
            "allow_remote=True (--allow-remote) refuses the documented default credential "
            f"{', '.join(known)}: anyone who can reach the emulator knows it. Pass a key (--api-key) or "
            "token (--access-token) of your own"
        )
    if not all(value.strip() for value in (*keys, *tokens)):
        raise ValueError("allow_remote=True (--allow-remote) refuses an empty API key or access token")
    return keys, tokens


def same_secret(given: str, expected: str) -> bool:
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


def authenticated(authorization: str | None, api_keys: Iterable[str], access_tokens: Iterable[str]) -> bool:
    """
    Tell whether an ``Authorization`` header carries an accepted API key (HTTP Basic) or access
    token (Bearer).

    :param authorization: the header's value, ``None`` when the request has none.
    :param api_keys: the API keys accepted as HTTP Basic user names.
    :param access_tokens: the OAuth access tokens accepted as ``Bearer``.
    """
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return any(same_secret(credentials, token) for token in access_tokens)
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Undocumented (a password with the key): a non-empty password is accepted; the key is the
    # user name either way.
    user = decoded.partition(":")[0]
    return any(same_secret(user, key) for key in api_keys)
