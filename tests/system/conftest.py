"""Fixtures the tests that run the example DAGs under ``dag.test()`` share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import API_KEY, CANCEL_DAG, CLEANUP_DAG, connection_uri_json, load_dag_module


@pytest.fixture
def armed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelling by rule armed by the deployment: ``[dropbox_sign] armed = True``."""
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", "True")


@pytest.fixture
def fast_confirmations(monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator confirms in 0.2 s; the DAGs' production interval would make each run wait a minute.
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__POKE_INTERVAL", "0.5")


@pytest.fixture
def approval_times_out(airflow_db: Path, fast_confirmations: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[dropbox_sign] approval_timeout`` of 3 s, so that an approval nobody answers times out while
    the test runs. The DAG must be loaded after it."""
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__APPROVAL_TIMEOUT", "3")


@pytest.fixture
def cleanup_dag(airflow_db: Path, fast_confirmations: None) -> Any:
    return load_dag_module(CLEANUP_DAG).dag


@pytest.fixture
def cancel_dag(airflow_db: Path, fast_confirmations: None) -> Any:
    return load_dag_module(CANCEL_DAG).dag


@pytest.fixture
def unpaced_account(monkeypatch: pytest.MonkeyPatch, airflow_db: Path) -> Any:
    """An emulator whose limit (and the connection's pacing) is raised so that a run of hundreds of
    requests is not paced, as the ``dropbox_sign_default`` connection; the test seeds it."""
    with DropboxSignEmulator(api_keys=(API_KEY,), rate_limit=100_000, cancel_delay=0.05) as emulator:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
            connection_uri_json(emulator.base_url, max_requests_per_minute=100_000),
        )
        yield emulator
