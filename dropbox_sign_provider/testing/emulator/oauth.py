"""
The emulator's OAuth: registered API apps, the refresh tokens granted to them, the access tokens
they refresh into (``POST /oauth/token?refresh``) and when those expire.

Dropbox Sign documents the refresh request and its answer (``oauthTokenRefresh`` in its OpenAPI
description) and that access tokens last "typically one hour"; it documents neither the error
names of a refused refresh nor what becomes of a refresh token once a refresh has answered a new
one. Those behaviours are marked "Undocumented" below, and the ones that may differ are settings,
so that a client can be tested against both answers.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dropbox_sign_provider.testing.emulator import clock
from dropbox_sign_provider.testing.emulator.access import same_secret
from dropbox_sign_provider.testing.emulator.errors import envelope

#: Dropbox Sign's "typically one hour".
DEFAULT_TOKEN_LIFETIME = 3600.0


@dataclass
class _Grant:
    # One app's authorization by the account: its current refresh token and those it replaced.
    client_id: str
    refresh_token: str
    superseded: list[str] = field(default_factory=list)
    revoked: bool = False


class TokenRefresh(NamedTuple):
    """
    One ``POST /oauth/token?refresh`` as the emulator answered it.

    :ivar time: epoch seconds at which it arrived.
    :ivar status: the HTTP status answered.
    :ivar error_name: the error's name, ``""`` for a 200.
    :ivar rotated: whether the answer carried a refresh token other than the one sent.
    """

    time: float
    status: int
    error_name: str = ""
    rotated: bool = False


class OAuthApps:
    """
    The OAuth side of one emulator; the emulator's lock guards it.

    :param apps: ``client_id`` -> ``client_secret`` of the registered API apps.
    :param token_lifetime: seconds an access token lives (its ``expires_in``).
    :param rotate_refresh_tokens: whether each refresh answers a new refresh token.
    :param superseded_refresh_tokens_work: whether a refresh token replaced by rotation still
        refreshes (``True``) or is refused with ``invalid_grant``.
    """

    def __init__(
        self,
        apps: Mapping[str, str] | None,
        token_lifetime: float,
        rotate_refresh_tokens: bool,
        superseded_refresh_tokens_work: bool,
    ) -> None:
        if token_lifetime <= 0:
            raise ValueError("token_lifetime must be positive")
        self.apps = dict(apps or {})
        self.token_lifetime = float(token_lifetime)
        self.rotate_refresh_tokens = bool(rotate_refresh_tokens)
        self.superseded_refresh_tokens_work = bool(superseded_refresh_tokens_work)
        self._grants: list[_Grant] = []
        # access token -> its expiry (epoch seconds) and the authorization it belongs to
        self._access: dict[str, tuple[float, _Grant]] = {}
        self.refreshes: list[TokenRefresh] = []

    def grant(self, client_id: str) -> str:
        """
        Authorize a registered app for the account, as the account's user does in Dropbox Sign's
        consent page followed by the code exchange: the app's refresh token.

        :raises KeyError: for an app that is not registered.
        """
        if client_id not in self.apps:
            raise KeyError(f"no registered OAuth app with client_id {client_id!r}")
        token = secrets.token_hex(20)
        self._grants.append(_Grant(client_id, token))
        return token

    def revoke(self, refresh_token: str) -> bool:
        """
        Revoke the authorization a refresh token belongs to (current or superseded): every refresh
        token and access token of it stops working. Whether it belonged to one.
        """
        grant = self._find(refresh_token)
        if grant is None:
            return False
        grant.revoked = True
        return True

    def issued(self) -> list[str]:
        """Every refresh and access token issued so far (for tests that look for them in logs)."""
        tokens = [token for grant in self._grants for token in (grant.refresh_token, *grant.superseded)]
        return tokens + list(self._access)

    def access_valid(self, token: str) -> bool:
        """
        Whether ``token`` is an access token this emulator issued, not expired and not revoked.
        An expired one is refused as any unknown token is: 401 ``unauthorized``.
        """
        issued = next((value for known, value in self._access.items() if same_secret(token, known)), None)
        return issued is not None and clock.now() < issued[0] and not issued[1].revoked

    def refresh(self, fields: Mapping[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """Answer one refresh request: its status and JSON body."""
        status, body = self._refresh(fields if isinstance(fields, Mapping) else {})
        error = body.get("error")
        self.refreshes.append(
            TokenRefresh(
                clock.now(),
                status,
                error.get("error_name", "") if isinstance(error, dict) else "",
                rotated=status == 200 and body.get("refresh_token") != (fields or {}).get("refresh_token"),
            )
        )
        return status, body

    def _refresh(self, fields: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        if fields.get("grant_type") != "refresh_token":
            return 400, envelope(400, "grant_type must be refresh_token", name="unsupported_grant_type")
        client_id = str(fields.get("client_id") or "")
        client_secret = str(fields.get("client_secret") or "")
        expected = self.apps.get(client_id)
        # Undocumented (a wrong client secret): refused 401 with the name RFC 6749 gives it.
        if expected is None or not same_secret(client_secret, expected):
            return 401, envelope(401, "Client authentication failed.", name="invalid_client")
        sent = str(fields.get("refresh_token") or "")
        grant = self._find(sent)
        # Undocumented (a revoked, unknown or superseded refresh token): refused 400 invalid_grant.
        if (
            grant is None
            or grant.revoked
            or grant.client_id != client_id
            or (sent != grant.refresh_token and not self.superseded_refresh_tokens_work)
        ):
            return 400, envelope(400, "The refresh token is invalid or revoked.", name="invalid_grant")
        if self.rotate_refresh_tokens:
            grant.superseded.append(grant.refresh_token)
            grant.refresh_token = secrets.token_hex(20)
        access = secrets.token_hex(20)
        self._access[access] = (clock.now() + self.token_lifetime, grant)
        return 200, {
            "access_token": access,
            "token_type": "Bearer",
            "refresh_token": grant.refresh_token,
            # Undocumented (expires_in): the spec says "Uses epoch time" of a number of seconds
            # until expiry; seconds from now, as in its example (86400) and RFC 6749.
            "expires_in": int(self.token_lifetime),
            "state": None,
        }

    def _find(self, refresh_token: str) -> _Grant | None:
        for grant in self._grants:
            if same_secret(refresh_token, grant.refresh_token) or any(
                same_secret(refresh_token, old) for old in grant.superseded
            ):
                return grant
        return None
