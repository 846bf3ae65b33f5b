"""
The API key and the access token never leave the connection: both example DAGs run end to end
under ``dag.test()`` with recognisable credentials, then every place a secret could end up is
searched for them: task logs, XComs, rendered template fields, trigger kwargs, the rest of the
metadata database and what the API itself logged. Errors, trigger kwargs, masking and TLS on their
own: tests/integration/test_secrets.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import (
    CANCEL_DAG,
    CLEANUP_DAG,
    DAY,
    ApprovalAnswer,
    leaks,
    load_dag_module,
    make_requests,
    recognisable_connection,
)


@pytest.fixture(scope="module")
def dags(airflow_db: Path) -> dict[str, Any]:
    return {"cancel": load_dag_module(CANCEL_DAG).dag, "cleanup": load_dag_module(CLEANUP_DAG).dag}


def database_sources(airflow_home: Path, run_ids: set[str]) -> dict[str, str | bytes]:
    """The metadata database: its files byte for byte, and the rows a secret would most likely reach."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    sources: dict[str, str | bytes] = {}
    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.run_id.in_(run_ids))).all()
        rendered = session.scalars(
            select(RenderedTaskInstanceFields).where(RenderedTaskInstanceFields.run_id.in_(run_ids))
        ).all()
        triggers = session.scalars(select(Trigger)).all()
        sources["xcom"] = json.dumps([[x.task_id, x.key, x.value] for x in xcoms], default=str)
        sources["rendered template fields"] = json.dumps(
            [[r.task_id, r.rendered_fields] for r in rendered], default=str
        )
        sources["trigger kwargs (database)"] = json.dumps(
            [[t.classpath, t.kwargs] for t in triggers], default=str
        )
    for path in sorted(airflow_home.glob("airflow.db*")):
        sources[f"database file {path.name}"] = path.read_bytes()
    return sources


def log_sources(airflow_home: Path, captured: str) -> dict[str, str | bytes]:
    sources: dict[str, str | bytes] = {"task output (stdout, stderr, logging)": captured}
    for path in sorted((airflow_home / "logs").rglob("*")) if (airflow_home / "logs").exists() else []:
        if path.is_file():
            sources[f"log file {path.relative_to(airflow_home)}"] = path.read_bytes()
    return sources


def run_cancel_dag(dag: Any, emulator: DropboxSignEmulator, approve: bool = True) -> tuple[Any, list[str]]:
    ids = make_requests(emulator, 3)
    if approve:
        # Approved through the form, so that the signed grants are among what is scanned.
        ApprovalAnswer(dag.dag_id, "approve", "Approve").start()
    return dag.test(run_conf={"signature_request_ids": ids}), ids


def run_cleanup_dag(dag: Any, emulator: DropboxSignEmulator) -> tuple[Any, list[str]]:
    # Only this run's stale requests are old enough (older than any other test's) to be picked.
    ids = make_requests(emulator, 3, created_at=time.time() - 400 * DAY, title="Leaktest")
    return dag.test(run_conf={"max_age_days": 365, "query": "title:Leaktest"}), ids


RUNS = {"cancel": run_cancel_dag, "cleanup": run_cleanup_dag}


Scan = Callable[[Any], tuple[str, dict[str, str | bytes]]]


@pytest.fixture
def scanned(airflow_db: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Scan:
    """Scans a run: what it printed and logged, and every source of it a secret could have reached."""

    def scan(dag_run: Any) -> tuple[str, dict[str, str | bytes]]:
        out, err = capfd.readouterr()
        captured = out + err + caplog.text
        return captured, {
            **log_sources(airflow_db, captured),
            **database_sources(airflow_db, {dag_run.run_id}),
        }

    return scan


@pytest.mark.parametrize("credential", ["api key", "access token"])
@pytest.mark.parametrize("dag_name", ["cancel", "cleanup"])
def test_example_dag_run_leaks_no_secret(
    dags: dict[str, Any],
    recognisable_account: DropboxSignEmulator,
    monkeypatch: pytest.MonkeyPatch,
    scanned: Scan,
    dag_name: str,
    credential: str,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", recognisable_connection(recognisable_account, credential)
    )
    # Armed, so that the clean-up cancels and waits: the run's calls and trigger carry the credential.
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", "True")
    recognisable_account.clear_log()

    dag_run, ids = RUNS[dag_name](dags[dag_name], recognisable_account)

    assert dag_run.state == "success"
    assert {recognisable_account.get_state(sr_id) for sr_id in ids} == {"canceled"}
    captured, sources = scanned(dag_run)
    # The scan below looks at real material: the run's logs, XComs, rendered fields and trigger.
    assert "Dropbox Sign cancellations" in captured
    assert all(sr_id in captured for sr_id in ids)
    sources["emulator request log"] = repr(recognisable_account.requests_log)
    assert all(sr_id in str(sources["xcom"]) for sr_id in ids)
    assert all(sr_id in str(sources["rendered template fields"]) for sr_id in ids)
    assert any(sr_id in str(sources["trigger kwargs (database)"]) for sr_id in ids)

    assert leaks(sources) == {}


def test_failed_run_leaks_no_secret(
    dags: dict[str, Any],
    recognisable_account: DropboxSignEmulator,
    monkeypatch: pytest.MonkeyPatch,
    scanned: Scan,
) -> None:
    # A revoked key: the API refuses it, the task fails and logs why.
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", recognisable_connection(recognisable_account, "revoked api key")
    )

    dag_run, ids = run_cancel_dag(dags["cancel"], recognisable_account, approve=False)

    assert dag_run.state == "failed"
    assert {recognisable_account.get_state(sr_id) for sr_id in ids} == {"awaiting_signature"}
    captured, sources = scanned(dag_run)
    assert "unauthorized" in captured
    assert all(sr_id in captured for sr_id in ids)

    assert leaks(sources) == {}
