"""The sensor, in poke mode and deferrable mode, on the same scenarios against the emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import (
    API_KEY,
    cancel_now,
    connection_uri_json,
    make_requests,
    refusal,
    run,
    sensor,
)

MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
HOUR = 3600.0


class Clock:
    """
    Wall-clock time that jumps ahead by every sleep instead of waiting it out, so an hour-long wait
    runs in a fraction of a second. Only ``time.time`` and the sleeps are replaced: the sensor's
    own run duration and the emulator's cancel delay keep real monotonic time.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real_time, real_sleep, real_async_sleep = time.time, time.sleep, asyncio.sleep

        def sleep(seconds: float) -> None:
            self.offset += max(0.0, seconds)
            real_sleep(0.001)

        async def async_sleep(delay: float, result: Any = None) -> Any:
            self.offset += max(0.0, delay)
            return await real_async_sleep(0, result)

        monkeypatch.setattr(time, "time", lambda: real_time() + self.offset)
        monkeypatch.setattr(time, "sleep", sleep)
        monkeypatch.setattr(asyncio, "sleep", async_sleep)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def instant(monkeypatch: pytest.MonkeyPatch) -> Iterator[DropboxSignEmulator]:
    """An emulator whose accepted cancels take effect at once: the fake clock does not move its delay."""
    with DropboxSignEmulator(api_keys=(API_KEY,), cancel_delay=0) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(emu.base_url))
        yield emu


@MODES
def test_list_of_ids_is_confirmed(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    ids = make_requests(emulator, 2)
    cancel_now(dropbox_sign_conn, *ids)
    assert run(sensor(ids, deferrable)) == dict.fromkeys(ids, "canceled")
    assert {emulator.get_state(i) for i in ids} == {"canceled"}


@MODES
def test_operator_output_waits_only_on_queued_ids(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    queued, gone = make_requests(emulator, 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    cancel_now(dropbox_sign_conn, queued, gone)
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
    cancel_now(dropbox_sign_conn, queued)
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
    cancel_now(dropbox_sign_conn, sr_id)
    queued = {sr_id: "cancel_requested"}  # the operator's result: it asked for this cancellation
    assert run(sensor(queued, deferrable, recancel_after=0.4)) == {sr_id: "canceled"}
    assert emulator.cancel_calls(sr_id) == 2


@MODES
def test_unconfirmed_ids_time_out(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    confirmed, lost = make_requests(emulator, 2)
    cancel_now(dropbox_sign_conn, confirmed)
    emulator.set_fault(never_complete=True)
    cancel_now(dropbox_sign_conn, lost)
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
        cancel_now(dropbox_sign_conn, sr_id)
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


@MODES
def test_bad_ids_fail_before_any_request(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    with pytest.raises(ValueError, match=r"'\.\./etc' is not a Dropbox Sign id"):
        run(sensor(["ab" * 20, "../etc"], deferrable))
    assert emulator.requests_log == []


@MODES
@pytest.mark.parametrize("form", ["mapping", "rendered"])
def test_a_bad_id_as_a_key_of_the_operators_result_fails_before_any_request(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool, form: str
) -> None:
    # The keys are what the sensor reads and may cancel again: they are checked like any id.
    result = {"ab" * 20: "cancel_requested", "../etc": "cancel_requested"}
    ids: Any = result if form == "mapping" else str(result)
    with pytest.raises(ValueError, match=r"'\.\./etc' is not a Dropbox Sign id"):
        run(sensor(ids, deferrable))
    assert emulator.requests_log == []


@MODES
def test_a_rendered_dry_run_result_is_carried_not_cancelled(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    # What "{{ ti.xcom_pull('cancel') }}" renders a dry run's result to: a string, not a mapping.
    untouched, gone = make_requests(emulator, 2)
    cancel_now(dropbox_sign_conn, gone)
    time.sleep(0.25)
    emulator.clear_log()
    rendered = str({untouched: "would_cancel", gone: "already_canceled"})
    result = run(sensor(rendered, deferrable, recancel_after=0.1))
    assert result == {untouched: "would_cancel", gone: "already_canceled"}
    assert emulator.requests_log == []
    assert emulator.get_state(untouched) == "awaiting_signature"


# --- the re-cancel rule: only what the sensor was asked to cancel, an hour of fake time ----------


def lost_cancel(emulator: DropboxSignEmulator) -> str:
    """A request whose first cancel is lost: only a re-cancel would cancel it. The log starts empty."""
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(never_complete=1)
    cancel_now("dropbox_sign_default", sr_id)
    emulator.clear_log()
    return sr_id


def posts(emulator: DropboxSignEmulator) -> list[float]:
    return [r.time for r in emulator.requests_log if r.method == "POST"]


@MODES
def test_plain_ids_are_watched_never_cancelled(
    instant: DropboxSignEmulator, clock: Clock, deferrable: bool
) -> None:
    emulator = instant
    sr_id = lost_cancel(emulator)
    task = sensor([sr_id], deferrable, poke_interval=600, timeout=3 * HOUR, recancel_after=HOUR)
    with pytest.raises(AirflowFailException, match=f"{sr_id}: cancellation not confirmed in time"):
        run(task)
    # Three hours of polls, three recancel_after periods: not one cancel for an id nobody asked to cancel.
    assert posts(emulator) == []
    assert len([r for r in emulator.requests_log if r.method == "GET"]) >= 17
    assert emulator.get_state(sr_id) == "cancel_requested"
    assert clock.offset >= 3 * HOUR - 1


@MODES
def test_plain_ids_are_recancelled_when_the_dag_author_opts_in(
    instant: DropboxSignEmulator, clock: Clock, deferrable: bool
) -> None:
    emulator = instant
    sr_id = lost_cancel(emulator)
    started = time.time()
    task = sensor([sr_id], deferrable, poke_interval=600, timeout=3 * HOUR, recancel_after=HOUR)
    task.recancel_plain_ids = True  # set after construction too: the value is read when it runs
    assert run(task) == {sr_id: "canceled"}
    (recancel,) = posts(emulator)
    assert HOUR <= recancel - started < HOUR + 600 + 60
    assert emulator.get_state(sr_id) == "canceled"


@MODES
@pytest.mark.parametrize("form", ["mapping", "rendered"])
def test_the_operators_queued_ids_are_recancelled_after_an_hour(
    instant: DropboxSignEmulator, clock: Clock, deferrable: bool, form: str
) -> None:
    emulator = instant
    sr_id = lost_cancel(emulator)
    started = time.time()
    result = {sr_id: "cancel_requested"}
    ids: Any = result if form == "mapping" else str(result)  # what a template renders it to
    assert run(sensor(ids, deferrable, poke_interval=600, timeout=3 * HOUR, recancel_after=HOUR)) == {
        sr_id: "canceled"
    }
    (recancel,) = posts(emulator)
    assert HOUR <= recancel - started < HOUR + 600 + 60


@MODES
def test_a_timeout_shorter_than_an_hour_is_accepted_and_said_once(
    instant: DropboxSignEmulator, clock: Clock, capfd: pytest.CaptureFixture[str], deferrable: bool
) -> None:
    emulator = instant
    sr_id = lost_cancel(emulator)
    task = SignatureRequestCanceledSensor(
        task_id="confirm",
        signature_request_ids={sr_id: "cancel_requested"},
        timeout=120,
        poke_interval=30,
        deferrable=deferrable,
    )
    with pytest.raises(AirflowFailException, match=f"{sr_id}: cancellation not confirmed in time"):
        run(task)
    assert posts(emulator) == []
    logged = capfd.readouterr()
    said = (
        "timeout 120 s is not longer than recancel_after 3600 s: no re-cancel can happen within this timeout"
    )
    assert (logged.out + logged.err).count(said) == 1


@MODES
def test_no_recancel_goes_out_at_the_deadline_however_many_attempts_are_left(
    instant: DropboxSignEmulator, clock: Clock, deferrable: bool
) -> None:
    emulator = instant
    sr_id = lost_cancel(emulator)
    # The first re-cancel falls due exactly when the wait ends: the deadline wins.
    task = sensor(
        {sr_id: "cancel_requested"},
        deferrable,
        poke_interval=600,
        timeout=HOUR,
        recancel_after=HOUR,
        max_cancel_attempts=10,
    )
    with pytest.raises(AirflowFailException, match=f"{sr_id}: cancellation not confirmed in time"):
        run(task)
    assert posts(emulator) == []
    assert emulator.get_state(sr_id) == "cancel_requested"  # the lost cancel, never completed


# --- one bad answer for one id -------------------------------------------------------------------


@MODES
def test_one_bad_answer_fails_only_its_id(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    bad, good = make_requests(emulator, 2)
    cancel_now(dropbox_sign_conn, bad, good)
    emulator.add_odd_answers(refusal(402, bad))
    with pytest.raises(AirflowFailException) as failed:
        run(sensor({bad: "cancel_requested", good: "cancel_requested"}, deferrable))
    message = str(failed.value)
    assert "1 canceled, 1 error; 1 failed:" in message
    assert f"{bad}: Dropbox Sign HTTP 402 payment_required: Payment required for this account." in message
    assert emulator.get_state(good) == "canceled"


def test_a_sensor_without_its_own_settings_takes_the_deployments_when_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor

    sensor = SignatureRequestCanceledSensor(task_id="confirm", signature_request_ids=[])
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__POKE_INTERVAL", "7")
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__EVENT_FIRST", "True")

    sensor.execute({"ti": None})  # nothing to wait for: one poke gives the verdict

    assert (sensor.wait_settings.poll_interval, sensor.wait_settings.event_first) == (7.0, True)
    assert sensor.poke_interval == 2.0  # event-first in poke mode reads the board every 2 s
