"""
The bulk send job DAG under ``dag.test()`` against the emulator: a person approves cancelling the
job's incomplete requests (no arming needed: a person approves the whole selection), and exactly
those are cancelled and confirmed; a rejection cancels nothing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import (
    BULK_SEND_JOB_DAG,
    DAY,
    ApprovalAnswer,
    load_dag_module,
    make_bulk_send_job,
    make_requests,
    run_answered,
    task_states,
    xcom_of,
)


@pytest.fixture
def bulk_dag(airflow_db: Any, fast_confirmations: None) -> Any:
    return load_dag_module(BULK_SEND_JOB_DAG).dag


@pytest.fixture
def job(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> tuple[str, list[str], list[str]]:
    """A job of 60 requests (one signed since) and two requests sent on their own."""
    job_id, ids = make_bulk_send_job(emulator, 60, created_at=time.time() - DAY)
    emulator.sign(ids[0])
    return job_id, ids, make_requests(emulator, 2)


def test_approved_cancels_every_incomplete_request_of_the_job(
    emulator: DropboxSignEmulator, bulk_dag: Any, job: tuple[str, list[str], list[str]]
) -> None:
    job_id, (signed, *pending), others = job

    dag_run, form = run_answered(
        bulk_dag, {"bulk_send_job_id": job_id}, ApprovalAnswer(BULK_SEND_JOB_DAG, "approve", "Approve")
    )

    assert dag_run.state == "success", task_states(dag_run)
    assert form["body"].startswith("**Approve cancels 59 signature requests: this cannot be undone.**")
    assert f"Selected by: bulk send job {job_id}" in form["body"]
    assert task_states(dag_run)["cancel"] == ["success", "success"]
    assert {emulator.get_state(i) for i in pending} == {"canceled"}
    assert {emulator.cancel_calls(i) for i in pending} == {1}
    assert emulator.get_state(signed) == "completed"
    assert {emulator.get_state(i) for i in others} == {"awaiting_signature"}
    report = xcom_of(dag_run, "report")
    assert report["counts"] == {"canceled": 59}
    assert report["listed"]["left_alone"] == {"complete": 1}
    assert report["decision"]["said"] == "approved by reviewer"


def test_rejected_cancels_nothing(
    emulator: DropboxSignEmulator, bulk_dag: Any, job: tuple[str, list[str], list[str]]
) -> None:
    job_id, _, _ = job

    dag_run, _ = run_answered(
        bulk_dag,
        {"bulk_send_job_id": job_id},
        ApprovalAnswer(BULK_SEND_JOB_DAG, "approve", "Reject", user="carol"),
    )

    assert dag_run.state == "success", task_states(dag_run)
    assert [e for e in emulator.requests_log if e.method == "POST"] == []
    report = xcom_of(dag_run, "report")
    assert report["counts"] == {"not_approved": 59}
    assert report["decision"]["said"] == "rejected by carol: nothing was cancelled"
