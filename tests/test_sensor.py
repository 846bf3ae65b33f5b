"""The sensor, in poke mode and deferrable mode, on the same scenarios against the emulator."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, TaskDeferred

from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.conftest import make_requests
from tests.test_operator import FakeTI, load_test_dag, resume, task_instances, xcom

MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])


def sensor(ids: Any, deferrable: bool, **kw: Any) -> SignatureRequestCanceledSensor:
    kw.setdefault("poke_interval", 0.1)
    kw.setdefault("timeout", 10)
    kw.setdefault("recancel_after", 5)
    return SignatureRequestCanceledSensor(
        task_id="confirm", signature_request_ids=ids, deferrable=deferrable, **kw
    )


def run(task: SignatureRequestCanceledSensor) -> Any:
    """Run as Airflow would: execute(); when it defers, the trigger, then resume_execution()."""
    ti = FakeTI()
    context: Any = {"ti": ti, "task_instance": ti}
    try:
        return task.execute(context)
    except TaskDeferred as deferred:
        return resume(task, deferred, context)


def cancel(conn_id: str, *ids: str) -> None:
    hook = DropboxSignHook(conn_id, retry_policy=RetryPolicy(max_retries=0))
    for sr_id in ids:
        hook.cancel_signature_request(sr_id)


@MODES
def test_list_of_ids_is_confirmed(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    ids = make_requests(emulator, 2)
    cancel(dropbox_sign_conn, *ids)
    assert run(sensor(ids, deferrable)) == dict.fromkeys(ids, "canceled")
    assert {emulator.get_state(i) for i in ids} == {"canceled"}


@MODES
def test_operator_output_waits_only_on_queued_ids(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    queued, gone = make_requests(emulator, 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    cancel(dropbox_sign_conn, queued, gone)
    time.sleep(0.25)
    emulator.clear_log()
    result = run(
        sensor(
            {queued: "cancel_requested", signed: "completed", gone: "already_canceled"},
            deferrable,
            on_completed="ignore",
        )
    )
    assert result == {queued: "canceled", signed: "completed", gone: "already_canceled"}
    assert list(result) == [queued, signed, gone]
    touched = {r.path.rsplit("/", 1)[1] for r in emulator.requests_log}
    assert touched == {queued}


@MODES
def test_carried_failures_fail_the_task(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    queued = make_requests(emulator, 1)[0]
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    cancel(dropbox_sign_conn, queued)
    with pytest.raises(AirflowFailException) as failed:
        run(sensor({queued: "cancel_requested", signed: "completed"}, deferrable))
    assert f"{signed}: completed before it could be cancelled" in str(failed.value)
    assert emulator.get_state(queued) == "canceled"


@MODES
def test_lost_cancel_is_sent_again(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(never_complete=1)
    cancel(dropbox_sign_conn, sr_id)
    assert run(sensor([sr_id], deferrable, recancel_after=0.4)) == {sr_id: "canceled"}
    assert emulator.cancel_calls(sr_id) == 2


@MODES
def test_unconfirmed_ids_time_out(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    confirmed, lost = make_requests(emulator, 2)
    cancel(dropbox_sign_conn, confirmed)
    emulator.set_fault(never_complete=True)
    cancel(dropbox_sign_conn, lost)
    started = time.monotonic()
    with pytest.raises(AirflowFailException) as failed:
        run(sensor([confirmed, lost], deferrable, timeout=0.8, recancel_after=0.8, max_cancel_attempts=1))
    assert 0.7 < time.monotonic() - started < 5
    message = str(failed.value)
    assert f"{lost}: cancellation not confirmed in time" in message
    assert "1 canceled, 1 timeout" in message
    assert emulator.cancel_calls(lost) == 1


@MODES
def test_not_found_fails_naming_the_id(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    missing = "0f" * 20
    with pytest.raises(AirflowFailException, match=f"{missing}: not found \\(404\\)"):
        run(sensor([missing], deferrable))


@MODES
@pytest.mark.parametrize(
    "case", ["not_found_while_waiting", "timeout", "carried_failure_only"], ids=["404", "timeout", "carried"]
)
def test_soft_fail_skips_instead_of_failing(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool, case: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    if case == "not_found_while_waiting":
        ids: Any = ["0f" * 20]
    elif case == "timeout":
        emulator.set_fault(never_complete=True)
        cancel(dropbox_sign_conn, sr_id)
        ids = [sr_id]
    else:
        ids = {sr_id: "forbidden"}  # the operator already failed on it: nothing to wait for
    with pytest.raises(AirflowSkipException):
        run(sensor(ids, deferrable, soft_fail=True, timeout=0.5, recancel_after=0.5, max_cancel_attempts=1))
    with pytest.raises(AirflowFailException):
        run(sensor(ids, deferrable, soft_fail=False, timeout=0.5, recancel_after=0.5, max_cancel_attempts=1))


@MODES
def test_nothing_to_wait_for_sends_nothing(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    ids = make_requests(emulator, 2)
    outcomes = {ids[0]: "already_canceled", ids[1]: "completed"}
    assert run(sensor(outcomes, deferrable, on_completed="ignore")) == outcomes
    assert emulator.requests_log == []


def test_reschedule_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"mode 'reschedule'.*use deferrable=True"):
        SignatureRequestCanceledSensor(
            task_id="confirm", signature_request_ids=["ab" * 20], mode="reschedule"
        )


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"poke_interval": -1}, "poke_interval -1"),
        ({"timeout": 10, "recancel_after": 60}, "recancel_after 60 is longer than timeout 10"),
        ({"on_completed": "skip"}, "on_completed 'skip'"),
        ({"max_cancel_attempts": 0}, "max_cancel_attempts 0"),
    ],
)
def test_bad_parameters_are_named(kw: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SignatureRequestCanceledSensor(task_id="confirm", signature_request_ids=["ab" * 20], **kw)


@MODES
def test_bad_ids_fail_before_any_request(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    with pytest.raises(ValueError, match=r"'\.\./etc' is not a Dropbox Sign id"):
        run(sensor(["ab" * 20, "../etc"], deferrable))
    assert emulator.requests_log == []


# --- under dag.test() ---------------------------------------------------------------------------


@pytest.mark.usefixtures("airflow_db")
def test_dag_cancel_then_confirm(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    plain, gone = make_requests(emulator, 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    cancel(dropbox_sign_conn, gone)
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


@MODES
def test_a_rendered_dry_run_result_is_carried_not_cancelled(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    # What "{{ ti.xcom_pull('cancel') }}" renders a dry run's result to: a string, not a mapping.
    untouched, gone = make_requests(emulator, 2)
    cancel(dropbox_sign_conn, gone)
    time.sleep(0.25)
    emulator.clear_log()
    rendered = str({untouched: "would_cancel", gone: "already_canceled"})
    result = run(sensor(rendered, deferrable, recancel_after=0.1))
    assert result == {untouched: "would_cancel", gone: "already_canceled"}
    assert emulator.requests_log == []
    assert emulator.get_state(untouched) == "awaiting_signature"
