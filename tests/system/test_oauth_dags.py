"""
The clean-up DAG and the manual DAG under ``dag.test()`` on an API app's connection whose access
tokens live 60 seconds, with rotation on and a replaced refresh token refused. Time runs 60 times
faster for the hooks and the emulator alike (their one ``time`` each), so a run of a few seconds
lives through several tokens; every other clock is real.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dropbox_sign_provider.hooks import dropbox_sign as hooks_module
from dropbox_sign_provider.hooks.oauth import refresh_token_variable
from dropbox_sign_provider.testing import emulator as emulator_module
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    DAY,
    make_requests,
    set_oauth_connection,
    task_states,
    xcom_of,
)

LIFETIME = 60.0
#: How much faster the hooks' and the emulator's clock runs than the wall clock.
SPEED = 60.0
CONN = "dropbox_sign_default"


class FastTime:
    """The ``time`` module, its epoch clock running :data:`SPEED` times faster from now on."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real
        self._start = real.time()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def time(self) -> float:
        return self._start + (self._real.time() - self._start) * SPEED

    def sleep(self, seconds: float) -> None:
        self._real.sleep(seconds / SPEED)


@pytest.fixture
def app_account(
    monkeypatch: pytest.MonkeyPatch, airflow_db: Path, make_emulator: Callable[..., DropboxSignEmulator]
) -> Iterator[DropboxSignEmulator]:
    """``dropbox_sign_default`` as an API app's connection to an emulator of 60-second tokens."""
    emulator = make_emulator(
        oauth_apps={CLIENT_ID: CLIENT_SECRET},
        token_lifetime=LIFETIME,
        rotate_refresh_tokens=True,
        superseded_refresh_tokens_work=False,
        cancel_delay=3.0,  # real seconds: three token lifetimes on the fast clock
        rate_limit=100_000,
    )
    set_oauth_connection(monkeypatch, CONN, emulator)
    fast = FastTime(time)
    monkeypatch.setattr(hooks_module, "time", fast)
    monkeypatch.setattr(emulator_module, "time", fast)
    yield emulator
    from airflow.models.variable import Variable

    Variable.delete(refresh_token_variable(CONN))


def assert_lived_through_several_tokens(emulator: DropboxSignEmulator) -> None:
    refreshes = emulator.token_refreshes
    assert len(refreshes) >= 3, refreshes
    assert {(r.status, r.rotated) for r in refreshes} == {(200, True)}
    log = emulator.requests_log
    assert {entry.status for entry in log} <= {200, 401, 410}
    # Tokens are renewed a tenth of their lifetime before they expire: a tenth of a real second on
    # this clock, which a call on a busy machine can outlast on its way (that the renewal comes
    # before the expiry is held by the hooks' own tests, on a patched clock). Such a call is refused
    # with 401 and sent again once, with a new token: never twice, never left refused.
    for index, entry in enumerate(log):
        if entry.status == 401:
            again = [
                later
                for later in log[index + 1 :]
                if (later.method, later.path) == (entry.method, entry.path)
            ]
            assert again, entry
            assert again[0].status in (200, 410), (entry, again[0])
    assert sum(entry.status == 401 for entry in log) < len(refreshes), [e for e in log if e.status == 401]


def test_cleanup_on_an_api_app_connection_across_refreshes(
    app_account: DropboxSignEmulator, armed: None, cleanup_dag: Any
) -> None:
    now = time.time()
    stale = make_requests(app_account, 3, created_at=now - 45 * DAY, title="NDA")
    fresh = make_requests(app_account, 2, created_at=now - 2 * DAY, title="NDA")

    dag_run = cleanup_dag.test(run_conf={})

    assert dag_run.state == "success", task_states(dag_run)
    assert {sr_id: app_account.get_state(sr_id) for sr_id in stale} == dict.fromkeys(stale, "canceled")
    assert all(app_account.cancel_calls(sr_id) == 0 for sr_id in fresh)
    assert_lived_through_several_tokens(app_account)


@pytest.mark.usefixtures("approval_not_required")
def test_manual_cancel_on_an_api_app_connection_across_refreshes(
    app_account: DropboxSignEmulator, cancel_dag: Any
) -> None:
    target, bystander = make_requests(app_account, 2)

    dag_run = cancel_dag.test(run_conf={"signature_request_ids": [target], "require_approval": False})

    assert dag_run.state == "success", task_states(dag_run)
    assert xcom_of(dag_run, "cancel") == {target: "canceled"}
    assert app_account.cancel_calls(target) == 1
    assert app_account.cancel_calls(bystander) == 0
    assert_lived_through_several_tokens(app_account)
