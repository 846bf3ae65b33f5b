"""
The DAG of the *Build your own* page (``docs/examples/cancel_stale_ndas.py``, the file the page
includes) under ``dag.test()`` against the emulator: it finds the old NDAs, a person approves them in
the Airflow UI (answered through the REST API's handler), and it cancels and confirms exactly those.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import DAY, ApprovalAnswer, load_docs_example, make_requests, run_answered, task_states

DAG_ID = "cancel_stale_ndas"


class Account:
    """Three NDAs out for signature for longer than 30 days, and what the DAG must leave alone."""

    def __init__(self, emulator: DropboxSignEmulator) -> None:
        now = time.time()
        self.emulator = emulator
        self.old_ndas = [
            make_requests(emulator, 1, created_at=now - days * DAY, title=f"NDA {days} days")[0]
            for days in (90, 60, 45)
        ]
        self.others = {
            "fresh NDA": make_requests(emulator, 1, created_at=now - 2 * DAY, title="NDA this week")[0],
            "old invoice": make_requests(emulator, 1, created_at=now - 90 * DAY, title="Invoice")[0],
            "old signed NDA": make_requests(
                emulator, 1, created_at=now - 90 * DAY, title="NDA signed", is_complete=True
            )[0],
            "old expired NDA": make_requests(
                emulator, 1, created_at=now - 90 * DAY, title="NDA expired", expires_at=now - DAY
            )[0],
        }

    def states(self, ids: list[str]) -> dict[str, str]:
        return {sr_id: self.emulator.get_state(sr_id) for sr_id in ids}

    def posts(self) -> list[str]:
        return [entry.path for entry in self.emulator.requests_log if entry.method == "POST"]

    def confirmed_by_get(self, sr_id: str) -> bool:
        """A read of ``sr_id`` answered 410 after its cancel: the wait saw the cancellation happen."""
        path = f"/v3/signature_request/{sr_id}"
        return any(entry.path == path and entry.status == 410 for entry in self.emulator.requests_log)


@pytest.fixture
def account(emulator: DropboxSignEmulator, dropbox_sign_conn: str, fast_confirmations: None) -> Account:
    return Account(emulator)


@pytest.fixture(params=["armed", "not armed"])
def deployment(request: pytest.FixtureRequest) -> str:
    """Either way: a selection a person approves as a whole needs no ``[dropbox_sign] armed``."""
    if request.param == "armed":
        request.getfixturevalue("armed")
    return str(request.param)


def test_the_page_dag_cancels_and_confirms_the_old_ndas_a_person_approved(
    account: Account, deployment: str, airflow_db: Any
) -> None:
    dag = load_docs_example(DAG_ID)

    dag_run, form = run_answered(dag, {}, ApprovalAnswer(DAG_ID, "approve", "Approve"))

    assert dag_run.state == "success", task_states(dag_run)
    assert task_states(dag_run) == {"find": ["success"], "approve": ["success"], "cancel": ["success"]}
    # The person saw each old NDA, and nothing else, before anything was cancelled.
    assert form["options"] == ["Approve", "Reject"]
    for days in (90, 60, 45):
        assert f"NDA {days} days" in form["body"]
    for title in ("NDA this week", "Invoice", "NDA signed", "NDA expired"):
        assert title not in form["body"]
    # Exactly the old NDAs were cancelled, once each, and each cancellation was confirmed.
    assert account.states(account.old_ndas) == dict.fromkeys(account.old_ndas, "canceled")
    assert sorted(account.posts()) == sorted(f"/v3/signature_request/cancel/{i}" for i in account.old_ndas)
    assert all(account.confirmed_by_get(sr_id) for sr_id in account.old_ndas)
    cancel = dag_run.get_task_instance("cancel")
    assert cancel.xcom_pull(task_ids="cancel") == dict.fromkeys(account.old_ndas, "canceled")
    # Everything else is as it was.
    others = list(account.others.values())
    assert account.states(others) == {
        account.others["fresh NDA"]: "awaiting_signature",
        account.others["old invoice"]: "awaiting_signature",
        account.others["old signed NDA"]: "completed",
        account.others["old expired NDA"]: "awaiting_signature",
    }


def test_the_page_dag_cancels_nothing_when_the_person_rejects(account: Account, airflow_db: Any) -> None:
    dag = load_docs_example(DAG_ID)

    dag_run, _ = run_answered(dag, {}, ApprovalAnswer(DAG_ID, "approve", "Reject", user="carol"))

    assert dag_run.state == "success", task_states(dag_run)
    assert task_states(dag_run)["cancel"] == ["skipped"]
    assert account.posts() == []
    assert account.states(account.old_ndas) == dict.fromkeys(account.old_ndas, "awaiting_signature")
