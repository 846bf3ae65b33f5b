"""Fixtures the tests that run the example DAGs under ``dag.test()`` share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CANCEL_DAG, CLEANUP_DAG, load_dag_module


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
