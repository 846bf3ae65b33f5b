"""
The first DAG of the quickstart (``docs/examples/cancel_signature_requests.py``, the file the page
includes) under ``dag.test()`` against the emulator: approved in the Airflow UI (answered through the
REST API's handler) it cancels and confirms the named requests; where the deployment lets ids named
at run time be cancelled unasked, it asks nobody. The *Testing* page's tests of it run the same way.
"""

from __future__ import annotations

from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import ApprovalAnswer, load_docs_example, make_requests, run_answered, task_states

DAG_ID = "cancel_signature_requests"


@pytest.fixture
def dag(airflow_db: Any, dropbox_sign_conn: str, fast_confirmations: None) -> Any:
    return load_docs_example(DAG_ID)


def test_approved_the_named_requests_are_cancelled_and_confirmed(
    emulator: DropboxSignEmulator, dag: Any
) -> None:
    target, bystander = make_requests(emulator, 2, title="NDA")

    dag_run, form = run_answered(
        dag, {"signature_request_ids": [target]}, ApprovalAnswer(DAG_ID, "approve", "Approve")
    )

    assert dag_run.state == "success", task_states(dag_run)
    assert f"`{target}`" in form["body"]
    assert emulator.get_state(target) == "canceled"
    assert emulator.get_state(bystander) == "awaiting_signature"
    assert emulator.cancel_calls(target) == 1
    assert dag_run.get_task_instance("cancel").xcom_pull(task_ids="cancel") == {target: "canceled"}


@pytest.mark.usefixtures("approval_not_required")
def test_a_signed_request_fails_the_run_once_the_others_are_cancelled(
    emulator: DropboxSignEmulator, dag: Any
) -> None:
    (pending,) = make_requests(emulator, 1, title="NDA")
    (signed,) = make_requests(emulator, 1, title="NDA", is_complete=True)

    dag_run = dag.test(run_conf={"signature_request_ids": [pending, signed]})

    assert dag_run.state == "failed"
    assert task_states(dag_run) == {"preview": ["success"], "approve": ["success"], "cancel": ["failed"]}
    assert emulator.get_state(pending) == "canceled"
    assert emulator.get_state(signed) == "completed"
    assert emulator.cancel_calls(signed) == 0
