"""
What the manual DAG cancels is what a person approved, whatever a run's XComs, states or form say.

Each test runs ``dropbox_sign_cancel_request`` under ``dag.test()`` and changes the run the way the
public REST API lets anyone who may edit runs change it (the same database writes its handlers
make), then judges by the emulator: which requests received a cancel. ``make e2e`` runs the same
cases on a real api-server with two users (``tests/e2e/single/tampering.py``).
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from dropbox_sign_provider.cancellation.grants import APPROVAL, mint
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.compat import requires_airflow_3_3
from tests.helpers import (
    CANCEL_DAG,
    ApprovalAnswer,
    make_requests,
    run_answered,
    task_states,
    xcom_of,
)

#: The runs change what they cancel on the emulator the ``emulator`` fixture starts.
pytestmark = pytest.mark.usefixtures("dropbox_sign_conn")


def posts(emulator: DropboxSignEmulator) -> list[str]:
    """The ids that received a cancel."""
    return [e.path.rsplit("/", 1)[1] for e in emulator.requests_log if e.method == "POST"]


def running_run_id() -> str:
    """The id of the manual DAG's run that dag.test() is running."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run_id = session.scalar(
            select(DagRun.run_id)
            .where(DagRun.dag_id == CANCEL_DAG, DagRun.state == "running")
            .order_by(DagRun.id.desc())
            .limit(1)
        )
    assert run_id is not None
    return str(run_id)


def set_xcom(task_id: str, key: str, value: Any) -> None:
    """Create or rewrite an XCom of the running test run, as ``POST``/``PATCH .../xcomEntries`` do."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        XComModel.set(
            key=key,
            value=value,
            dag_id=CANCEL_DAG,
            task_id=task_id,
            run_id=running_run_id(),
            map_index=-1,
            session=session,
        )


def forged_grant(ids: list[str]) -> dict[str, Any]:
    """An approval grant for this run, made as the provider makes one, with another key."""
    return mint(
        secrets.token_bytes(32),
        kind=APPROVAL,
        dag_id=CANCEL_DAG,
        run_id=running_run_id(),
        ids=ids,
        approved_by={"id": "ceo", "name": "ceo"},
    )


def test_ids_put_in_place_of_the_signed_selection_after_the_form_was_shown_are_not_cancelled(
    emulator: DropboxSignEmulator, cancel_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    shown, added = make_requests(emulator, 2)
    widened = ApprovalAnswer(
        CANCEL_DAG,
        "approve",
        "Approve",
        before_answer=lambda: set_xcom("preview", "selection", [shown, added]),
    )

    dag_run, form = run_answered(cancel_dag, {"signature_request_ids": [shown]}, widened)

    assert form["body"].count("`") >= 2
    assert added not in form["body"]
    assert posts(emulator) == []
    said = capfd.readouterr()
    if task_states(dag_run)["approve"] == ["success"]:
        # Airflow 3.3 resumes the approval with the selection it showed: cancel refuses the ids.
        assert task_states(dag_run)["cancel"] == ["failed"]
        refused = "this step cancels only what a provider step selected, and it was handed no selection grant"
    else:
        # dag.test() of 3.1 and 3.2 resumes it without: it reads the selection again, and refuses it.
        assert task_states(dag_run)["cancel"] == ["upstream_failed"]
        refused = "Not asking anybody: the selection grant is not a grant"
    assert refused in said.out + said.err


@requires_airflow_3_3(
    "dag.test() before 3.3 waits in line on the approval's trigger, and sees no state set from outside"
)
def test_a_forged_answer_and_grant_with_the_approval_marked_successful_cancel_nothing(
    emulator: DropboxSignEmulator, cancel_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    (target,) = make_requests(emulator, 1)

    class Forger(ApprovalAnswer):
        def _answer(self) -> None:
            from airflow.models.taskinstance import TaskInstance
            from airflow.utils.session import create_session
            from sqlalchemy import update

            run_id, _ = self._wait_until_parked()
            forged = {"chosen_options": ["Approve"], "responded_by_user": {"id": "ceo", "name": "ceo"}}
            set_xcom("approve", "answer", forged)
            set_xcom("approve", "return_value", forged_grant([target]))
            with create_session() as session:
                session.execute(
                    update(TaskInstance)
                    .where(TaskInstance.run_id == run_id, TaskInstance.task_id == "approve")
                    .values(state="success")
                )

    Forger(CANCEL_DAG, "approve", None).start()
    dag_run = cancel_dag.test(run_conf={"signature_request_ids": [target]})

    assert task_states(dag_run)["cancel"] == ["failed"]
    assert posts(emulator) == []
    said = capfd.readouterr()
    assert "Nothing was cancelled: the approval grant's signature does not match" in said.out + said.err


def run_with_the_forms_approval(
    cancel_dag: Any, emulator: DropboxSignEmulator, require_approval: bool, option: str
) -> tuple[str, Any, dict[str, Any]]:
    """A run for one new request, its form's ``require_approval`` as given, answered ``option``:
    the request's id, the run and the form it showed."""
    (target,) = make_requests(emulator, 1)
    conf = {"signature_request_ids": [target], "require_approval": require_approval}
    dag_run, form = run_answered(cancel_dag, conf, ApprovalAnswer(CANCEL_DAG, "approve", option))
    return target, dag_run, form


@pytest.mark.usefixtures("approval_not_required")
def test_the_form_may_add_an_approval_the_deployment_does_not_require(
    emulator: DropboxSignEmulator, cancel_dag: Any
) -> None:
    _, dag_run, form = run_with_the_forms_approval(cancel_dag, emulator, True, "Reject")

    assert form["options"] == ["Approve", "Reject"]
    assert task_states(dag_run)["cancel"] == ["skipped"]
    assert posts(emulator) == []


def test_the_form_cannot_remove_an_approval_the_deployment_requires(
    emulator: DropboxSignEmulator, cancel_dag: Any
) -> None:
    target, dag_run, form = run_with_the_forms_approval(cancel_dag, emulator, False, "Approve")

    assert form["options"] == ["Approve", "Reject"]
    assert dag_run.state == "success", task_states(dag_run)
    assert posts(emulator) == [target]
    assert xcom_of(dag_run, "cancel") == {target: "canceled"}


@pytest.mark.parametrize(
    ("approver", "cancelled"),
    # dag.test() triggers its runs as the user "dag_test".
    [("dag_test", False), ("carol", True)],
    ids=["the-user-who-triggered", "another-user"],
)
def test_with_four_eyes_only_another_user_than_the_one_who_triggered_may_approve(
    emulator: DropboxSignEmulator,
    cancel_dag: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    approver: str,
    cancelled: bool,
) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__FOUR_EYES", "True")
    (target,) = make_requests(emulator, 1)
    answer = ApprovalAnswer(CANCEL_DAG, "approve", "Approve", user=approver)

    dag_run, _ = run_answered(cancel_dag, {"signature_request_ids": [target]}, answer)

    states = task_states(dag_run)
    if cancelled:
        assert dag_run.state == "success", states
        assert posts(emulator) == [target]
        return
    assert (states["approve"], states["cancel"]) == (["failed"], ["upstream_failed"])
    assert posts(emulator) == []
    said = capfd.readouterr().out
    assert "'dag_test' triggered this run, and [dropbox_sign] four_eyes needs another person" in said


def test_the_deployments_approvers_are_the_forms_assigned_users(
    emulator: DropboxSignEmulator, cancel_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__APPROVERS", "legal, carol")
    (target,) = make_requests(emulator, 1)
    answer = ApprovalAnswer(CANCEL_DAG, "approve", "Approve", user="carol")

    dag_run, _ = run_answered(cancel_dag, {"signature_request_ids": [target]}, answer)

    assert dag_run.state == "success", task_states(dag_run)
    assert posts(emulator) == [target]
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        detail = session.scalars(select(HITLDetail).order_by(HITLDetail.created_at.desc())).first()
        assert detail is not None
        assert [user["id"] for user in detail.assigned_users] == ["legal", "carol"]
