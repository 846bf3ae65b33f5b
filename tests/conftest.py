"""
Shared fixtures: an isolated Airflow home with a migrated SQLite database, the bundled emulator on
loopback, and connections pointing at it. Plain functions and constants live in ``tests.helpers``.

The tests come in three tiers, each named after the concept its files test:

- ``tests/unit``: logic on its own, with no socket, no emulator and no ``dag.test()``;
- ``tests/integration``: the hooks, tasks, trigger, callback receiver and the emulator itself,
  against the bundled emulator over loopback (or Airflow's database), without ``dag.test()``;
- ``tests/system``: DAGs run under ``dag.test()`` (the example DAGs and ``tests/system/dags``).

``tests/e2e`` holds the runs on a real deployment (``make e2e``,
``make e2e-distributed``), outside these tiers.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Airflow reads its configuration on first import: point it at a throw-away home first.
if os.environ.get("DROPBOX_SIGN_TEST_AIRFLOW_HOME"):
    _AIRFLOW_HOME = Path(os.environ["DROPBOX_SIGN_TEST_AIRFLOW_HOME"])
else:
    _AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-test-"))
    atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# dag.test() runs a DAG only once it is in a bundle: the example DAGs, the DAGs the documentation
# shows and the tests' own DAGs.
os.environ.setdefault(
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    json.dumps(
        [
            {
                "name": name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(Path(__file__).parent.parent / folder), "refresh_interval": 0},
            }
            for name, folder in (
                ("dags-folder", "dags"),
                ("docs-examples", "docs/examples"),
                ("test-dags", "tests/system/dags"),
            )
        ]
    ),
)
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# Airflow 3.2's dag.test() starts the task execution API in process, and that start-up fails
# (quietly; every task then fails) without a JWT secret. 3.3 does not need it there.
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))

import pytest

from dropbox_sign_provider.hooks.budget import forget_budgets
from dropbox_sign_provider.hooks.oauth import forget_tokens
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.compat import answer_hitl_requests_in_dag_test, keep_dag_test_execution_apis_alive
from tests.helpers import (
    ACCESS_TOKEN,
    API_KEY,
    RECOGNISABLE_KEY,
    RECOGNISABLE_TOKEN,
    HookClient,
    connection_uri_json,
    set_connection,
)

keep_dag_test_execution_apis_alive()
answer_hitl_requests_in_dag_test()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the test Airflow home (for ``dag.test()``)."""
    marker = _AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            env={**os.environ},
        )
        marker.touch()
    return _AIRFLOW_HOME


@pytest.fixture(autouse=True)
def _fresh_budgets() -> Iterator[None]:
    # Budgets and access tokens are process-wide by design; each test starts with an account and
    # an API app nobody has used.
    forget_budgets()
    forget_tokens()
    yield
    forget_budgets()
    forget_tokens()


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., DropboxSignEmulator]]:
    """Starts emulators on loopback, each stopped after the test: ``make_emulator(**kwargs)``.

    Key ``test-key``, token ``test-token`` and 0.2 s cancellations unless ``kwargs`` (any of
    DropboxSignEmulator's keyword arguments) say otherwise.
    """
    with contextlib.ExitStack() as running:

        def make(**kwargs: Any) -> DropboxSignEmulator:
            settings: dict[str, Any] = {
                "api_keys": (API_KEY,),
                "access_tokens": (ACCESS_TOKEN,),
                "cancel_delay": 0.2,
                **kwargs,
            }
            return running.enter_context(DropboxSignEmulator(**settings))

        yield make


@pytest.fixture
def emulator(
    request: pytest.FixtureRequest, make_emulator: Callable[..., DropboxSignEmulator]
) -> DropboxSignEmulator:
    """A fresh emulator on loopback, as ``make_emulator()`` starts it.

    ``@pytest.mark.emulator(**kwargs)`` on a test (or a module's ``pytestmark``) passes ``kwargs``
    to ``make_emulator``: other credentials, ``rate_limit``, ``window_seconds``, ...
    """
    marker = request.node.get_closest_marker("emulator")
    return make_emulator(**(marker.kwargs if marker is not None else {}))


@pytest.fixture(scope="module")
def recognisable_account() -> Iterator[DropboxSignEmulator]:
    """An emulator, for the whole module, that accepts the recognisable credentials of tests.helpers."""
    # cancel_delay=0: the confirming trigger sees each cancellation done on its first poll.
    with DropboxSignEmulator(
        api_keys=(RECOGNISABLE_KEY,), access_tokens=(RECOGNISABLE_TOKEN,), rate_limit=10_000, cancel_delay=0
    ) as emu:
        yield emu


@pytest.fixture
def dropbox_sign_conn(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``dropbox_sign_default`` pointing at the emulator with the API key; returns the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(emulator.base_url))
    return "dropbox_sign_default"


@pytest.fixture
def key_conn(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``ds_key``: the emulator's first API key, as the connection's password."""
    return set_connection(monkeypatch, "ds_key", host=emulator.base_url, password=emulator.api_keys[0])


@pytest.fixture
def token_conn(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``ds_token``: the emulator's first access token, in the connection's extra."""
    return set_connection(
        monkeypatch, "ds_token", host=emulator.url, extra={"access_token": emulator.access_tokens[0]}
    )


@pytest.fixture
def approval_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment whose ``[dropbox_sign]`` policy lets ids named at run time be cancelled unasked."""
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__REQUIRE_APPROVAL", "False")


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest) -> Callable[..., HookClient]:
    """Makes a HookClient over the sync hook, then the async one: ``client(conn_id, **hook_kwargs)``."""
    kind: str = request.param

    def make(conn_id: str, **hook_kwargs: Any) -> HookClient:
        return HookClient(kind, conn_id, **hook_kwargs)

    return make


@pytest.fixture
def log_events() -> Iterator[list[Any]]:
    """What tasks, triggers and hooks log during the test, as structlog events (``event``,
    ``log_level``, ...): Airflow's loggers are structlog's, which pytest's ``caplog`` does not see.
    Events below the loggers' level (DEBUG, by default) are not there."""
    from structlog.testing import capture_logs

    with capture_logs() as events:
        yield events
