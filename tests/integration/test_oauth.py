"""
API app connections: both hooks refresh their OAuth access tokens at the emulator's token endpoint,
reuse them until shortly before they expire, refresh once on a 401, keep a rotated refresh token
in the connection's Variable, and fail with errors that name the connection and hold no secret.
Time is patched (the module ``time``, which the emulator's clock reads too), never slept.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, TaskDeferred

from dropbox_sign_provider.exceptions import (
    DropboxSignError,
    DropboxSignOAuthClientError,
    DropboxSignTokenHostError,
)
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.hooks.oauth import refresh_token_variable
from dropbox_sign_provider.testing import emulator as emulator_module
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from dropbox_sign_provider.testing.emulator.faults import OddAnswer
from tests.helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    FAST,
    FakeTI,
    HookClient,
    closed_port,
    make_requests,
    operator,
    resume,
    run,
    sensor,
    set_connection,
    set_oauth_connection,
)

LIFETIME = 60.0
APP = "ds_app"


class Clock:
    """
    Wall-clock time that jumps ahead by every sleep instead of waiting it out; the emulator reads
    the same ``time.time``, so its tokens expire on this clock too.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real_time, real_sleep, real_async_sleep = time.time, time.sleep, asyncio.sleep
        #: called with the offset after every sleep
        self.on_sleep: Callable[[float], None] = lambda offset: None

        # Only the test's own thread (the hooks, the task, the trigger's loop) jumps: the emulator's
        # thread keeps sleeping for real, or its idle loops would move the clock on their own.
        def sleep(seconds: float) -> None:
            if threading.current_thread() is not threading.main_thread():
                return real_sleep(seconds)
            self.offset += max(0.0, seconds)
            self.on_sleep(self.offset)
            return real_sleep(0.001)

        async def async_sleep(delay: float, result: Any = None) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return await real_async_sleep(delay, result)
            self.offset += max(0.0, delay)
            self.on_sleep(self.offset)
            return await real_async_sleep(0, result)

        monkeypatch.setattr(time, "time", lambda: real_time() + self.offset)
        monkeypatch.setattr(time, "sleep", sleep)
        monkeypatch.setattr(asyncio, "sleep", async_sleep)

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def set(self, at: float) -> None:
        """Make ``time.time()`` answer ``at`` now."""
        self.offset += at - time.time()


class Later:
    """The emulator's clock two token lifetimes ahead of the hooks': every token it issued expired."""

    def time(self) -> float:
        return time.time() + 2 * LIFETIME

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def app_emulator(make_emulator: Callable[..., DropboxSignEmulator]) -> DropboxSignEmulator:
    """An emulator with one registered API app, 60-second access tokens, rotation on and a replaced
    refresh token refused: the harshest of the answers Dropbox Sign may give."""
    return make_emulator(
        oauth_apps={CLIENT_ID: CLIENT_SECRET},
        token_lifetime=LIFETIME,
        rotate_refresh_tokens=True,
        superseded_refresh_tokens_work=False,
        cancel_delay=0,
        rate_limit=10_000,
    )


@pytest.fixture
def app_conn(app_emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, airflow_db: Path) -> str:
    """``ds_app``: an API app's connection to :func:`app_emulator`, its Variable deleted afterwards."""
    set_oauth_connection(monkeypatch, APP, app_emulator)
    yield APP  # type: ignore[misc]
    _delete_variable(refresh_token_variable(APP))


def _delete_variable(key: str) -> None:
    from airflow.models.variable import Variable

    Variable.delete(key)


def _stored(conn_id: str) -> str | None:
    from airflow.models.variable import Variable

    value = Variable.get(refresh_token_variable(conn_id), default_var=None)
    return value if isinstance(value, str) else None


def failed_calls(emulator: DropboxSignEmulator) -> list[tuple[str, int]]:
    """Every call answered with an error, but the 410 that confirms a cancellation."""
    return [(entry.path, entry.status) for entry in emulator.requests_log if entry.status not in (200, 410)]


def test_both_hooks_refresh_once_then_reuse_until_shortly_before_expiry(
    app_emulator: DropboxSignEmulator, app_conn: str, clock: Clock, client: Callable[..., HookClient]
) -> None:
    (sr_id,) = make_requests(app_emulator, 1)
    hooks = client(app_conn)
    for _ in range(3):
        hooks.get(sr_id)
    assert len(app_emulator.token_refreshes) == 1
    # The margin is a tenth of a 60-second lifetime: 53 s on, the token is still used...
    obtained = app_emulator.token_refreshes[0].time
    clock.set(obtained + 53)
    hooks.get(sr_id)
    assert len(app_emulator.token_refreshes) == 1
    # ...and 55 s on, it is renewed before it is used.
    clock.set(obtained + 55)
    hooks.get(sr_id)
    assert [r.status for r in app_emulator.token_refreshes] == [200, 200]
    assert failed_calls(app_emulator) == []
    # Rotation: the newest refresh token is the one kept in the connection's Variable.
    assert _stored(app_conn) is not None
    assert all(r.rotated for r in app_emulator.token_refreshes)


def test_a_401_refreshes_once_and_sends_the_call_again(
    app_emulator: DropboxSignEmulator,
    app_conn: str,
    monkeypatch: pytest.MonkeyPatch,
    client: Callable[..., HookClient],
) -> None:
    (sr_id,) = make_requests(app_emulator, 1)
    hooks = client(app_conn, retry_policy=FAST)
    hooks.get(sr_id)

    # The emulator alone moves on: its tokens expire while the hook still trusts its own.
    monkeypatch.setattr(emulator_module, "time", Later())
    hooks.cancel(sr_id)
    assert [(r.method, r.status) for r in app_emulator.requests_log][-2:] == [("POST", 401), ("POST", 200)]
    assert len(app_emulator.token_refreshes) == 2
    assert app_emulator.cancel_calls(sr_id) == 1  # the refused attempt never reached the API


def test_a_401_after_a_fresh_token_fails_without_a_loop(
    app_emulator: DropboxSignEmulator, app_conn: str, client: Callable[..., HookClient]
) -> None:
    (sr_id,) = make_requests(app_emulator, 1)
    app_emulator.add_odd_answers(
        OddAnswer.error(
            401, "unauthorized", "Unauthorized user.", path_prefix="/v3/signature_request", times=5
        )
    )
    with pytest.raises(DropboxSignError) as refused:
        client(app_conn, retry_policy=FAST).get(sr_id)
    assert refused.value.status_code == 401
    assert [r.status for r in app_emulator.requests_log] == [401, 401]
    assert len(app_emulator.token_refreshes) == 2


def test_refresh_calls_are_retried_on_5xx_and_spend_no_api_budget(
    make_emulator: Callable[..., DropboxSignEmulator],
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: Path,
    client: Callable[..., HookClient],
) -> None:
    emu = make_emulator(oauth_apps={CLIENT_ID: CLIENT_SECRET}, token_lifetime=LIFETIME, rate_limit=1)
    set_oauth_connection(monkeypatch, "ds_app_5xx", emu)
    emu.add_odd_answers(
        OddAnswer(status=503, body="<html>busy</html>", method="POST", path_prefix="/oauth/token", times=2)
    )
    (sr_id,) = make_requests(emu, 1)
    # A rate limit of one request a window: the refreshes did not spend it, so the GET goes at once.
    assert client("ds_app_5xx", retry_policy=FAST).get(sr_id)["signature_request_id"] == sr_id
    assert [r.status for r in emu.token_refreshes] == [200]
    assert [r.status for r in emu.requests_log] == [200]


def test_a_wait_of_three_token_lifetimes_confirms_without_a_failed_call(
    app_emulator: DropboxSignEmulator, app_conn: str, clock: Clock, deferrable: bool
) -> None:
    ids = make_requests(app_emulator, 3)
    app_emulator.set_fault(never_complete=True)  # accepted, then lost: the wait outlives the tokens
    for sr_id in ids:
        DropboxSignHook(app_conn).cancel_signature_request(sr_id)

    def complete_after_three_lifetimes(offset: float) -> None:
        if offset > 3 * LIFETIME + 5 and app_emulator.faults["never_complete"]:
            app_emulator.clear_faults()
            for sr_id in ids:
                DropboxSignHook(app_conn).cancel_signature_request(sr_id)

    clock.on_sleep = complete_after_three_lifetimes
    result = run(sensor(ids, deferrable, poke_interval=10, timeout=3600, dropbox_sign_conn_id=app_conn))
    assert result == dict.fromkeys(ids, "canceled")
    assert failed_calls(app_emulator) == []
    refreshes = app_emulator.token_refreshes
    assert len(refreshes) >= 4
    assert {r.status for r in refreshes} == {200}


@pytest.fixture(params=[False, True], ids=["poke", "deferrable"])
def deferrable(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_a_revoked_refresh_token_fails_the_task_clearly_and_cancels_nothing(
    app_emulator: DropboxSignEmulator,
    app_conn: str,
    approval_not_required: None,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    ids = make_requests(app_emulator, 2)
    refresh_token = json.loads(os.environ[f"AIRFLOW_CONN_{APP.upper()}"])["extra"]["refresh_token"]
    assert app_emulator.revoke_refresh_token(refresh_token)
    with pytest.raises(AirflowException) as refused:
        run(operator(ids, dropbox_sign_conn_id=app_conn))
    message = str(refused.value)
    # Each id names the refusal: the connection, what to do, and the Variable to clear.
    for sr_id in ids:
        assert f"{sr_id}: Dropbox Sign HTTP 400 invalid_grant: connection {APP!r}" in message
    assert "authorize the app again" in message
    assert refresh_token_variable(APP) in message
    assert all(app_emulator.cancel_calls(sr_id) == 0 for sr_id in ids)
    # One refusal, remembered: the second id failed at once, without asking the token endpoint again.
    assert [r.error_name for r in app_emulator.token_refreshes] == ["invalid_grant"]
    assert app_emulator.requests_log == []
    assert_no_secret(app_emulator, message, caplog.text, *capfd.readouterr(), *exception_texts(refused.value))


def test_a_wrong_client_secret_and_an_unreachable_token_host_name_the_connection(
    app_emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, airflow_db: Path
) -> None:
    set_oauth_connection(monkeypatch, "ds_wrong_secret", app_emulator, client_secret="cs-live-WRONGSECRET000")
    with pytest.raises(DropboxSignOAuthClientError, match=r"'ds_wrong_secret'.*client_secret") as wrong:
        DropboxSignHook("ds_wrong_secret", retry_policy=FAST).get_account()
    assert "WRONGSECRET" not in "".join(exception_texts(wrong.value))

    set_oauth_connection(
        monkeypatch,
        "ds_no_host",
        app_emulator,
        oauth_refresh_url=f"http://127.0.0.1:{closed_port()}/oauth/token",
    )
    with pytest.raises(
        DropboxSignTokenHostError, match=r"'ds_no_host'.*could not be reached.*oauth_refresh_url"
    ):
        DropboxSignHook("ds_no_host", retry_policy=FAST).get_account()
    assert app_emulator.requests_log == []


def test_a_refresh_token_replaced_meanwhile_is_read_again_from_the_variable(
    app_emulator: DropboxSignEmulator, app_conn: str, clock: Clock
) -> None:
    # Another process refreshes with the connection's refresh token first (rotation: it is replaced
    # and refused from then on) and writes the newer one to the Variable a moment later.
    connection = json.loads(os.environ[f"AIRFLOW_CONN_{APP.upper()}"])["extra"]
    answer = app_emulator.oauth.refresh({**connection, "grant_type": "refresh_token"})[1]

    def the_other_process_writes(offset: float) -> None:
        from airflow.models.variable import Variable

        Variable.set(refresh_token_variable(app_conn), answer["refresh_token"])

    clock.on_sleep = the_other_process_writes
    assert DropboxSignHook(app_conn).get_account()["email_address"] == "me@example.com"
    assert [(r.status, r.error_name) for r in app_emulator.token_refreshes] == [
        (200, ""),
        (400, "invalid_grant"),
        (200, ""),
    ]
    assert _stored(app_conn) not in (None, answer["refresh_token"])  # this process rotated it again


# --- no secret anywhere ------------------------------------------------------------------------


def exception_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), "".join(traceback.format_exception(error)), repr(pickle.dumps(error))]


def assert_no_secret(emulator: DropboxSignEmulator, *texts: str) -> None:
    secrets = [CLIENT_SECRET, *emulator.oauth.issued()]
    found = [secret[:6] for secret in secrets for text in texts if secret in text]
    assert found == []


def test_no_token_or_secret_in_logs_xcom_or_trigger_kwargs(
    app_emulator: DropboxSignEmulator,
    app_conn: str,
    approval_not_required: None,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    log_events: list[Any],
) -> None:
    ids = make_requests(app_emulator, 2)
    ti = FakeTI()
    context: Any = {"ti": ti, "task_instance": ti}
    task = operator(
        ids, dropbox_sign_conn_id=app_conn, deferrable=True, wait_for_confirmation=True, timeout=3600
    )
    app_emulator.set_fault(never_complete=True)  # these cancels are lost: the trigger sends them again
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    app_emulator.clear_faults()
    _, kwargs = deferred.value.trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON
    assert kwargs["dropbox_sign_conn_id"] == app_conn
    clock.advance(3 * LIFETIME)  # the trigger's first call needs a new access token
    result = resume(task, deferred.value, context)
    assert result == dict.fromkeys(ids, "canceled")
    rendered = {field: str(getattr(task, field)) for field in task.template_fields}
    assert len(app_emulator.token_refreshes) == 2
    assert_no_secret(
        app_emulator,
        json.dumps(kwargs),
        json.dumps(result),
        json.dumps(ti.xcoms, default=str),
        json.dumps(rendered),
        caplog.text,
        *capfd.readouterr(),
        json.dumps(log_events, default=str),
    )


# --- two processes --------------------------------------------------------------------------------

_WORKER = """
import json, sys, time
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.hooks.oauth import token_keeper
start, phase2 = float(sys.argv[1]), sys.argv[2]
hook = DropboxSignHook("ds_shared")
while time.time() < start:
    time.sleep(0.005)
first = hook.get_account()["email_address"]
import pathlib
while not pathlib.Path(phase2).exists():
    time.sleep(0.02)
second = hook.get_account()["email_address"]
print(json.dumps({"first": first, "second": second}))
"""


def test_two_processes_refreshing_at_once_both_keep_working(
    app_emulator: DropboxSignEmulator,
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: Path,
    tmp_path: Path,
) -> None:
    set_oauth_connection(monkeypatch, "ds_shared", app_emulator)
    phase2 = tmp_path / "phase2"
    from cryptography.fernet import Fernet

    # One deployment: its components share the key Variables are encrypted with.
    env = {**os.environ, "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode()}
    start = time.time() + 8  # both processes have imported Airflow by then
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(start), str(phase2)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.time() + 60
        while len(app_emulator.requests_log) < 2 and time.time() < deadline:
            time.sleep(0.05)
        if len(app_emulator.requests_log) != 2:
            for worker in workers:
                worker.kill()
            errors = [worker.communicate()[:2] for worker in workers]
            raise AssertionError(f"{app_emulator.token_refreshes}: {errors}")

        # Both access tokens expire: each process gets a 401 and refreshes with the newest token.
        monkeypatch.setattr(emulator_module, "time", Later())
        phase2.touch()
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for (out, err), worker in zip(outputs, workers, strict=True):
        assert worker.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {
            "first": "me@example.com",
            "second": "me@example.com",
        }
    refreshes = app_emulator.token_refreshes
    # Four refreshes answered; any refused one (a replaced token) was followed by a good one.
    assert [r.status for r in refreshes].count(200) == 4
    _delete_variable(refresh_token_variable("ds_shared"))
    for _, err in outputs:
        assert CLIENT_SECRET not in err
        assert all(token not in err for token in app_emulator.oauth.issued())


def test_connection_fields_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "ds_half", host="https://api.hellosign.com", extra={"client_id": "x"})
    with pytest.raises(
        ValueError, match="'ds_half' is an API app's connection without client_secret, refresh_token"
    ):
        DropboxSignHook("ds_half").get_account()
    set_connection(
        monkeypatch,
        "ds_mixed",
        host="https://api.hellosign.com",
        password="k",
        extra={"client_id": "x", "client_secret": "y", "refresh_token": "z"},
    )
    with pytest.raises(ValueError, match=r"an API app.s fields and an API key"):
        DropboxSignHook("ds_mixed").get_account()
    set_connection(
        monkeypatch,
        "ds_plain",
        host="https://api.hellosign.com",
        extra={
            "client_id": "x",
            "client_secret": "y",
            "refresh_token": "z",
            "oauth_refresh_url": "http://example.com/t",
        },
    )
    with pytest.raises(ValueError, match=r"plain http:// to 'example\.com'"):
        DropboxSignHook("ds_plain").get_account()
    set_connection(
        monkeypatch,
        "ds_default_url",
        host="https://api.hellosign.com",
        extra={"client_id": "x", "client_secret": "y", "refresh_token": "z"},
    )
    settings = DropboxSignHook("ds_default_url").settings
    assert settings.oauth is not None
    assert settings.oauth.token_url == "https://app.hellosign.com/oauth/token"
    assert "y" not in repr(settings.oauth).replace("token_url", "")  # secrets out of repr
    ok, message = DropboxSignHook("ds_default_url").test_connection()
    assert ok is False
    assert "not tested" in message
