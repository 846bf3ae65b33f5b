"""The emulator's token endpoint: refresh, expiry on its clock, rotation, revocation, the admin calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from dropbox_sign_provider.testing import emulator as emulator_module
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from dropbox_sign_provider.testing.emulator.cli import main
from tests.helpers import CLIENT_ID, CLIENT_SECRET


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def refresh(emu: DropboxSignEmulator, refresh_token: str, **fields: Any) -> requests.Response:
    body = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **fields,
    }
    return requests.post(f"{emu.oauth_refresh_url}?refresh", json=body, timeout=10)


def account(emu: DropboxSignEmulator, access_token: str) -> int:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(f"{emu.base_url}/account", headers=headers, timeout=10).status_code


@pytest.mark.parametrize("superseded_work", [True, False])
def test_tokens_expire_rotate_and_are_revoked(
    make_emulator: Callable[..., DropboxSignEmulator], monkeypatch: pytest.MonkeyPatch, superseded_work: bool
) -> None:
    clock = FakeClock(1_800_000_000.0)
    monkeypatch.setattr(emulator_module, "time", clock)
    emu = make_emulator(
        oauth_apps={CLIENT_ID: CLIENT_SECRET},
        token_lifetime=60,
        rotate_refresh_tokens=True,
        superseded_refresh_tokens_work=superseded_work,
    )
    first = emu.grant_refresh_token(CLIENT_ID)
    answer = refresh(emu, first).json()
    assert answer["expires_in"] == 60
    assert answer["token_type"] == "Bearer"
    assert answer["refresh_token"] != first
    assert account(emu, answer["access_token"]) == 200
    clock.now += 60
    assert account(emu, answer["access_token"]) == 401
    # The replaced refresh token: honoured or refused, as the emulator is told.
    assert refresh(emu, first).status_code == (200 if superseded_work else 400)
    latest = refresh(emu, answer["refresh_token"])
    assert latest.status_code == 200
    wrong = refresh(emu, latest.json()["refresh_token"], client_secret="nope")
    assert (wrong.status_code, wrong.json()["error"]["error_name"]) == (401, "invalid_client")
    # Revocation ends every token of the authorization, refresh and access alike.
    fresh = refresh(emu, latest.json()["refresh_token"]).json()
    assert emu.revoke_refresh_token(first)
    revoked = refresh(emu, fresh["refresh_token"])
    assert (revoked.status_code, revoked.json()["error"]["error_name"]) == (400, "invalid_grant")
    assert account(emu, fresh["access_token"]) == 401
    assert emu.requests_log[-1].status == 401


def test_admin_calls_grant_and_revoke(make_emulator: Callable[..., DropboxSignEmulator]) -> None:
    emu = make_emulator(oauth_apps={CLIENT_ID: CLIENT_SECRET})
    granted = requests.post(f"{emu.admin_url}/oauth/grants", json={"client_id": CLIENT_ID}, timeout=10)
    refresh_token = granted.json()["refresh_token"]
    assert refresh(emu, refresh_token).status_code == 200
    assert refresh(emu, refresh_token).json()["refresh_token"] == refresh_token  # no rotation by default
    unknown = requests.post(f"{emu.admin_url}/oauth/grants", json={"client_id": "other"}, timeout=10)
    assert unknown.status_code == 400
    revoke = requests.post(f"{emu.admin_url}/oauth/revoke", json={"refresh_token": refresh_token}, timeout=10)
    assert revoke.json() == {"revoked": True}
    assert refresh(emu, refresh_token).status_code == 400
    refreshes = requests.get(f"{emu.admin_url}/oauth/refreshes", timeout=10).json()
    assert [(r["status"], r["error_name"], r["rotated"]) for r in refreshes] == [
        (200, "", False),
        (200, "", False),
        (400, "invalid_grant", False),
    ]
    # A form body, as Dropbox Sign's cURL sample sends, reads the same; the code exchange is not served.
    form = requests.post(f"{emu.oauth_refresh_url}?refresh", data={"grant_type": "refresh_token"}, timeout=10)
    assert form.json()["error"]["error_name"] == "invalid_client"
    assert requests.post(emu.oauth_refresh_url, json={}, timeout=10).status_code == 400


def test_the_command_line_registers_apps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--oauth-app", "no-secret", "--port", "0"])
    assert "CLIENT_ID:CLIENT_SECRET" in capsys.readouterr().err
