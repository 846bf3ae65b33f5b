"""
The operator and the sensor as tasks of the test DAGs (``tests/system/dags``) under ``dag.test()``,
against the emulator: ids from a param, a template, an XCom and mapping, a dry run from a param, the
deployment's default policy, many outcomes failing once without a retry, a retry after partial
progress, and a cancel then confirm pipeline.
"""

from __future__ import annotations

import time

import pytest

from dropbox_sign_provider.links import details_url
from dropbox_sign_provider.testing import DropboxSignEmulator, OddAnswer
from tests.helpers import (
    LINK_KEY,
    MISSING,
    calls,
    cancel_now,
    load_test_dag,
    make_requests,
    task_instances,
    xcom,
)

# --- the operator ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("airflow_db", "approval_not_required")
@pytest.mark.parametrize("dry", [False, True], ids=["cancel", "dry"])
def test_dag_dry_run_from_a_param(emulator: DropboxSignEmulator, dropbox_sign_conn: str, dry: bool) -> None:
    sr_id = make_requests(emulator, 1)[0]
    dag_run = load_test_dag("t_cancel_dry_run_param").test(run_conf={"ids": [sr_id], "dry": dry})
    ti = task_instances(dag_run)["cancel", -1]
    assert str(ti.state) == "success"
    assert xcom(ti) == {sr_id: "would_cancel" if dry else "cancel_requested"}
    assert emulator.cancel_calls(sr_id) == (0 if dry else 1)


@pytest.mark.usefixtures("airflow_db", "approval_not_required")
def test_dag_ids_from_xcom_template_and_mapping(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    from_xcom = make_requests(emulator, 2)
    from_template = make_requests(emulator, 2)
    mapped = [
        *make_requests(emulator, 2),
        emulator.create_signature_request(is_complete=True)["signature_request_id"],
    ]
    dag_run = load_test_dag("t_cancel_sources").test(
        run_conf={"from_xcom": [*from_xcom, from_xcom[0]], "from_template": from_template, "mapped": mapped}
    )
    tis = task_instances(dag_run)
    assert {key: str(ti.state) for key, ti in tis.items()} == {
        ("find_from_xcom", -1): "success",
        ("cancel_from_xcom", -1): "success",
        ("find_from_template", -1): "success",
        ("cancel_from_template", -1): "success",
        ("find_mapped", -1): "success",
        ("cancel_mapped", 0): "success",
        ("cancel_mapped", 1): "success",
        ("cancel_mapped", 2): "success",
    }
    # From an upstream XCom, duplicates dropped, confirmed on the triggerer.
    assert xcom(tis["cancel_from_xcom", -1]) == dict.fromkeys(from_xcom, "canceled")
    # From a template, which renders the list to its text.
    assert xcom(tis["cancel_from_template", -1]) == dict.fromkeys(from_template, "cancel_requested")
    # One mapped task per id, each with its own link.
    for index, sr_id in enumerate(mapped):
        ti = tis["cancel_mapped", index]
        assert xcom(ti) == {sr_id: "completed" if index == 2 else "cancel_requested"}
        assert xcom(ti, LINK_KEY) == details_url(sr_id)
    assert [emulator.cancel_calls(i) for i in [*from_xcom, *from_template, *mapped]] == [1] * 7


@pytest.mark.usefixtures("airflow_db")
def test_dag_ids_named_at_run_time_are_not_cancelled_unapproved_under_the_default_policy(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    # [dropbox_sign] require_approval defaults to True: ids from a param, a template or an XCom
    # are what a person triggering the run chose, and nobody approved them.
    ids = make_requests(emulator, 3)
    dag_run = load_test_dag("t_cancel_sources").test(
        run_conf={"from_xcom": ids[:1], "from_template": ids[1:2], "mapped": ids[2:]}
    )
    states = {key: str(ti.state) for key, ti in task_instances(dag_run).items()}
    assert {key: state for key, state in states.items() if key[0].startswith("cancel")} == {
        ("cancel_from_xcom", -1): "failed",
        ("cancel_from_template", -1): "failed",
        ("cancel_mapped", 0): "failed",
    }
    assert [emulator.cancel_calls(i) for i in ids] == [0, 0, 0]


@pytest.mark.usefixtures("airflow_db", "approval_not_required")
def test_dag_many_ids_mixed_outcomes_fail_once_without_retry(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, capfd: pytest.CaptureFixture[str]
) -> None:
    plain = make_requests(emulator, 6)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    foreign = emulator.create_signature_request(forbidden=True)["signature_request_id"]
    ids = [*plain[:3], MISSING, signed, foreign, *plain[3:]]
    dag_run = load_test_dag("t_cancel_mixed").test(run_conf={"ids": ids})
    ti = task_instances(dag_run)["cancel", -1]
    assert str(ti.state) == "failed"
    assert ti.try_number == 1  # verdicts are not retried, although retries=1
    assert xcom(ti, "outcomes") == {
        **dict.fromkeys(plain, "cancel_requested"),
        MISSING: "not_found",
        signed: "completed",
        foreign: "forbidden",
    }
    assert [r.path.rsplit("/", 1)[1] for r in emulator.requests_log if r.method == "POST"] == ids
    assert {emulator.get_state(i) for i in plain} <= {"cancel_requested", "canceled"}
    failures = [
        line for line in capfd.readouterr().out.splitlines() if "Dropbox Sign cancellation failed:" in line
    ]
    assert failures
    assert "3 failed: " in failures[0]
    for sr_id, why in (
        (MISSING, "not found (404)"),
        (signed, "completed before"),
        (foreign, "forbidden (403)"),
    ):
        assert f"{sr_id}: {why}" in failures[0]


@pytest.mark.usefixtures("airflow_db", "approval_not_required")
def test_dag_retry_after_partial_progress(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    first, second, third = make_requests(emulator, 3)
    # First try: the first cancel goes through; the second is answered by a redirect (no verdict,
    # never followed), so the task fails for a retry after the third. The retry callback ends the
    # trouble.
    emulator.add_odd_answers(
        OddAnswer(
            302,
            {"Location": "https://elsewhere.example/"},
            path_prefix=f"/v3/signature_request/cancel/{second}",
        )
    )
    dag_run = load_test_dag("t_cancel_retry").test(
        run_conf={"ids": [first, second, third], "emulator_admin_url": emulator.admin_url}
    )
    ti = task_instances(dag_run)["cancel", -1]
    assert calls(emulator)[:4] == [
        ("POST", first, 200),
        ("POST", second, 302),
        ("GET", second, 200),
        ("POST", third, 200),
    ]
    assert str(ti.state) == "success"
    assert ti.try_number == 2
    # The retry sends only what the first try did not have accepted; the rest is this run's own
    # cancellation, not one "already cancelled" by someone else.
    assert calls(emulator)[4:] == [("POST", second, 200)]
    assert xcom(ti) == {first: "cancel_requested", second: "cancel_requested", third: "cancel_requested"}
    assert [emulator.cancel_calls(i) for i in (first, second, third)] == [1, 1, 1]
    # The record is gone once the task is done with it.
    assert accepted_records() == []


def accepted_records() -> list[str]:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(session.scalars(select(Variable.key).where(Variable.key.like("dropbox_sign_accepted%"))))


# --- the sensor -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("airflow_db", "approval_not_required")
def test_dag_cancel_then_confirm(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    plain, gone = make_requests(emulator, 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    cancel_now(dropbox_sign_conn, gone)
    while emulator.get_state(gone) != "canceled":
        time.sleep(0.05)
    emulator.clear_log()
    dag_run = load_test_dag("t_cancel_pipeline").test(run_conf={"ids": [plain, signed, gone]})
    tis = task_instances(dag_run)
    assert {task_id: str(ti.state) for (task_id, _), ti in tis.items()} == {
        "cancel": "success",
        "confirm": "success",
        "confirm_poke": "success",
    }
    assert xcom(tis["cancel", -1]) == {
        plain: "cancel_requested",
        signed: "completed",
        gone: "already_canceled",
    }
    final = {plain: "canceled", signed: "completed", gone: "already_canceled"}
    assert xcom(tis["confirm", -1]) == final
    assert list(xcom(tis["confirm", -1])) == [plain, signed, gone]
    assert xcom(tis["confirm_poke", -1]) == final  # poking agrees with the triggerer
    assert emulator.get_state(plain) == "canceled"
    assert [emulator.cancel_calls(i) for i in (plain, signed, gone)] == [1, 1, 2]
    log = [(r.method, r.path.rsplit("/", 1)[1], r.status) for r in emulator.requests_log]
    assert log[:5] == [
        ("POST", plain, 200),
        ("POST", signed, 400),
        ("GET", signed, 200),
        ("POST", gone, 410),
        ("GET", gone, 410),
    ]
    # The sensors asked only about the one id that was waiting.
    assert {sr_id for _, sr_id, _ in log[5:]} == {plain}
