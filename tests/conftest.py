"""
Shared fixtures: an isolated Airflow home with a migrated SQLite database, the bundled emulator on
loopback, and connections pointing at it.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Airflow reads its configuration on first import: point it at a throw-away home first.
if os.environ.get("DROPBOX_SIGN_TEST_AIRFLOW_HOME"):
    _AIRFLOW_HOME = Path(os.environ["DROPBOX_SIGN_TEST_AIRFLOW_HOME"])
else:
    _AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-test-"))
    atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# dag.test() runs a DAG only once it is in a bundle: the example DAGs and the tests' own DAGs.
os.environ.setdefault(
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    json.dumps(
        [
            {
                "name": name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(Path(__file__).parent.parent / folder), "refresh_interval": 0},
            }
            for name, folder in (("dags-folder", "dags"), ("test-dags", "tests/dags"))
        ]
    ),
)
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# Airflow 3.2's dag.test() starts the task execution API in process, and that start-up fails
# (quietly; every task then fails) without a JWT secret. 3.3 does not need it there.
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))

import pytest

from dropbox_sign_provider.hooks.policy import forget_budgets
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.compat import keep_dag_test_execution_apis_alive

keep_dag_test_execution_apis_alive()

API_KEY = "test-key"
ACCESS_TOKEN = "test-token"
REPO = Path(__file__).parent.parent


def connection_uri_json(base_url: str, *, api_key: str | None = API_KEY, **extra: object) -> str:
    """An ``AIRFLOW_CONN_*`` value (JSON form) for a dropbox_sign connection."""
    conn: dict[str, object] = {"conn_type": "dropbox_sign", "host": base_url}
    if api_key is not None:
        conn["password"] = api_key
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


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
    # Budgets are process-wide by design; each test starts with an account nobody has used.
    forget_budgets()
    yield
    forget_budgets()


@pytest.fixture
def emulator() -> Iterator[DropboxSignEmulator]:
    """A fresh emulator on loopback: key ``test-key``, token ``test-token``, 0.2 s cancellations."""
    with DropboxSignEmulator(api_keys=(API_KEY,), access_tokens=(ACCESS_TOKEN,), cancel_delay=0.2) as emu:
        yield emu


@pytest.fixture
def dropbox_sign_conn(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``dropbox_sign_default`` pointing at the emulator with the API key; returns the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(emulator.base_url))
    return "dropbox_sign_default"


def make_requests(emulator: DropboxSignEmulator, n: int, **fields: object) -> list[str]:
    """Create ``n`` signature requests and return their ids."""
    return [emulator.create_signature_request(**fields)["signature_request_id"] for _ in range(n)]
