"""The trigger, its run() driven directly with asyncio against the emulator."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from dropbox_sign_provider.testing import DropboxSignEmulator
from dropbox_sign_provider.triggers.signature_request import SignatureRequestCanceledTrigger
from tests.compat import serde
from tests.helpers import (
    API_KEY,
    cancel_now,
    cancel_times,
    collect,
    connection_uri_json,
    make_requests,
    make_trigger,
    refusal,
    run_trigger,
)

CLASSPATH = "dropbox_sign_provider.triggers.signature_request.SignatureRequestCanceledTrigger"
_real_sleep = asyncio.sleep


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten every asyncio wait, so the hook's own retries are spent in a fraction of a second."""

    async def short_sleep(delay: float, result: Any = None) -> Any:
        return await _real_sleep(min(delay, 0.05), result)

    monkeypatch.setattr(asyncio, "sleep", short_sleep)


# --- serialization -------------------------------------------------------------------------------


def test_serialize_is_plain_json_without_secrets(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    trigger = make_trigger(["ab" * 20, "cd" * 20], 1_700_000_000.0, timeout=600, max_cancel_attempts=4)
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    text = json.dumps(kwargs)
    assert json.loads(text) == kwargs
    assert API_KEY not in text
    assert kwargs == {
        "dropbox_sign_conn_id": "dropbox_sign_default",
        "pending": {
            "ab" * 20: {"last_cancel_at": 1_700_000_000.0, "cancel_attempts": 1, "may_recancel": True},
            "cd" * 20: {"last_cancel_at": 1_700_000_000.0, "cancel_attempts": 1, "may_recancel": True},
        },
        "deadline": 1_700_000_600.0,
        "outcomes": {"ab" * 20: "cancel_requested", "cd" * 20: "cancel_requested"},
        "poll_interval": 0.1,
        "recancel_after": 5.0,
        "max_cancel_attempts": 4,
        "on_completed": "fail",
        "errors": {},
        "event_first": False,
    }
    rebuilt = SignatureRequestCanceledTrigger(**json.loads(text))
    assert rebuilt.serialize() == (classpath, kwargs)


# --- verdicts ------------------------------------------------------------------------------------


def test_confirmed_cancellation(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    ids = make_requests(emulator, 2)
    trigger = make_trigger(ids, cancel_now(dropbox_sign_conn, *ids))
    payload = run_trigger(trigger)
    assert payload["status"] == "success"
    assert payload["outcomes"] == dict.fromkeys(ids, "canceled")
    assert payload["failures"] == {}
    assert [emulator.get_state(i) for i in ids] == ["canceled", "canceled"]
    assert [emulator.cancel_calls(i) for i in ids] == [1, 1]


@pytest.mark.parametrize(
    ("field", "on_completed", "status"),
    [
        ("is_complete", "fail", "failure"),
        ("is_complete", "ignore", "success"),
        ("is_declined", "fail", "failure"),
        ("is_declined", "ignore", "success"),
    ],
)
def test_signed_or_declined_is_final(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, field: str, on_completed: str, status: str
) -> None:
    plain = make_requests(emulator, 1)[0]
    done = emulator.create_signature_request(**{field: True})["signature_request_id"]
    outcome = "completed" if field == "is_complete" else "declined"
    trigger = make_trigger([plain, done], cancel_now(dropbox_sign_conn, plain), on_completed=on_completed)
    payload = run_trigger(trigger)
    assert payload["status"] == status
    assert payload["outcomes"] == {plain: "canceled", done: outcome}
    assert (done in payload["failures"]) is (on_completed == "fail")
    assert emulator.cancel_calls(done) == 0  # a final state is never cancelled again


@pytest.mark.parametrize("case", ["not_found", "forbidden", "unauthorized"])
def test_terminal_errors(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    conn_id = dropbox_sign_conn
    if case == "not_found":
        sr_id = "ef" * 20
    else:
        sr_id = emulator.create_signature_request(forbidden=case == "forbidden")["signature_request_id"]
    if case == "unauthorized":
        monkeypatch.setenv(
            "AIRFLOW_CONN_DS_REVOKED", connection_uri_json(emulator.base_url, api_key="revoked")
        )
        conn_id = "ds_revoked"
    started = time.monotonic()
    payload = run_trigger(make_trigger([sr_id], time.time(), dropbox_sign_conn_id=conn_id))
    assert time.monotonic() - started < 2  # settled on the first poll, not at the deadline
    assert payload["status"] == "failure"
    assert payload["outcomes"] == {sr_id: case}
    assert list(payload["failures"]) == [sr_id]
    assert sr_id in payload["message"]
    assert [r.status for r in emulator.requests_log] == [{"not_found": 404, "forbidden": 403}.get(case, 401)]


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize(
    ("fault", "statuses", "spent"),
    [
        ({"rate_limit_storm": 1.0}, {429}, 7),
        ({"error_rate": 1.0, "error_statuses": (500, 502, 503)}, {500, 502, 503}, 7),
        # aiohttp sends a GET again by itself when the server drops a reused connection.
        ({"drop_rate": 1.0}, {0}, 13),
    ],
    ids=["429", "5xx", "network"],
)
def test_no_verdict_keeps_waiting_and_is_logged(
    emulator: DropboxSignEmulator,
    dropbox_sign_conn: str,
    capfd: pytest.CaptureFixture[str],
    fault: dict[str, Any],
    statuses: set[int],
    spent: int,
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    trigger = make_trigger([sr_id], cancel_now(dropbox_sign_conn, sr_id), timeout=20.0)
    emulator.set_fault(seed=7, **fault)
    # The outage lasts until one GET has spent all its retries (the first attempt and 5 retries)
    # and the next poll has begun: counted (``spent`` GETs), not timed, so a slow machine cannot
    # end it early.
    stop = threading.Event()

    def end_outage_after_a_spent_call() -> None:
        while not stop.wait(0.01):
            if sum(1 for r in emulator.requests_log if r.method == "GET") >= spent:
                emulator.clear_faults()
                return

    watcher = threading.Thread(target=end_outage_after_a_spent_call)
    watcher.start()
    try:
        payload = run_trigger(trigger)
    finally:
        stop.set()
        watcher.join()
    assert payload["status"] == "success"
    assert payload["outcomes"] == {sr_id: "canceled"}
    gets = [r.status for r in emulator.requests_log if r.method == "GET"]
    assert set(gets) & statuses
    assert gets[-1] == 410
    assert emulator.cancel_calls(sr_id) == 1  # an outage is no reason to cancel again
    logged = capfd.readouterr()
    assert f"Signature request {sr_id}: no verdict this time" in logged.out + logged.err


def test_one_bad_answer_ends_only_its_id(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    bad, good = make_requests(emulator, 2)
    trigger = make_trigger([bad, good], cancel_now(dropbox_sign_conn, bad, good))
    emulator.add_odd_answers(refusal(400, bad))
    payload = run_trigger(trigger)
    assert payload["status"] == "failure"
    assert payload["outcomes"] == {bad: "error", good: "canceled"}
    assert payload["failures"] == {
        bad: "Dropbox Sign HTTP 400 bad_request: Signature request is in an invalid state. "
        f"(GET /signature_request/{bad})"
    }
    assert emulator.get_state(good) == "canceled"


def test_a_bug_still_raises_instead_of_an_event(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Anything that is not an answer of the API fails the task rather than hiding in an event.
    sr_id = make_requests(emulator, 1)[0]
    trigger = make_trigger([sr_id], cancel_now(dropbox_sign_conn, sr_id))

    real_clock = time.time

    def broken_clock() -> float:
        # Broken for the watch only: Airflow's own connection lookup reads the clock too (3.1 turns
        # a failure there into "conn_id isn't defined"), and that is not what this test is about.
        if sys._getframe(1).f_globals.get("__name__") == "dropbox_sign_provider.cancellation.watch":
            raise RuntimeError("clock is broken")
        return real_clock()

    events: list[TriggerEvent] = []

    async def consume() -> None:
        monkeypatch.setattr(time, "time", broken_clock)
        async for event in trigger.run():
            events.append(event)

    with pytest.raises(RuntimeError, match="clock is broken"):
        asyncio.run(consume())
    assert events == []


# --- the re-cancel rule and the deadline ---------------------------------------------------------


def test_lost_cancel_is_sent_again_after_recancel_after(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, capfd: pytest.CaptureFixture[str]
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(never_complete=1)  # the first cancel of each request is lost
    trigger = make_trigger([sr_id], cancel_now(dropbox_sign_conn, sr_id), recancel_after=0.5)
    payload = run_trigger(trigger)
    assert payload["status"] == "success"
    assert payload["outcomes"] == {sr_id: "canceled"}
    first, second = cancel_times(emulator, sr_id)
    assert second - first >= 0.5
    assert emulator.get_state(sr_id) == "canceled"
    logged = capfd.readouterr()
    assert f"Signature request {sr_id}: cancellation not confirmed" in logged.out + logged.err


def test_max_cancel_attempts_ends_in_timeout(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(never_complete=True)
    started = time.monotonic()
    trigger = make_trigger(
        [sr_id], cancel_now(dropbox_sign_conn, sr_id), timeout=10.0, recancel_after=0.3, max_cancel_attempts=2
    )
    payload = run_trigger(trigger)
    assert time.monotonic() - started < 3  # ended by the attempts, long before the deadline
    assert payload["status"] == "failure"
    assert payload["outcomes"] == {sr_id: "timeout"}
    assert payload["failures"] == {sr_id: "cancellation not confirmed in time"}
    assert emulator.cancel_calls(sr_id) == 2
    assert emulator.get_state(sr_id) == "cancel_requested"


def test_deadline_lists_the_ids_still_pending(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    confirmed, lost = make_requests(emulator, 2)
    cancel_now(dropbox_sign_conn, confirmed)
    emulator.set_fault(never_complete=True)
    at = cancel_now(dropbox_sign_conn, lost)
    trigger = make_trigger([confirmed, lost], at, timeout=0.8, recancel_after=5.0)
    payload = run_trigger(trigger)
    assert time.time() >= at + 0.8
    assert payload["status"] == "failure"
    assert payload["outcomes"] == {confirmed: "canceled", lost: "timeout"}
    assert list(payload["failures"]) == [lost]
    assert f"{lost}: cancellation not confirmed in time" in payload["message"]
    assert confirmed not in payload["message"].split("failed:")[1]
    assert emulator.cancel_calls(lost) == 1  # recancel_after never came


def test_rebuilt_after_the_deadline_polls_once_then_ends(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    # A triggerer that was down past the deadline: what is confirmed by now still counts.
    confirmed, lost = make_requests(emulator, 2)
    at = cancel_now(dropbox_sign_conn, confirmed)
    emulator.set_fault(never_complete=True)
    cancel_now(dropbox_sign_conn, lost)
    time.sleep(0.3)
    payload = run_trigger(make_trigger([confirmed, lost], at - 100, timeout=50))
    assert payload["outcomes"] == {confirmed: "canceled", lost: "timeout"}
    assert [r.method for r in emulator.requests_log].count("GET") == 2


def test_round_trip_mid_wait_resumes_the_same_clocks(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(never_complete=2)  # the first two cancels are lost, the third one works
    recancel_after = 1.0
    first = make_trigger(
        [sr_id], cancel_now(dropbox_sign_conn, sr_id), timeout=20.0, recancel_after=recancel_after
    )
    deadline = first.serialize()[1]["deadline"]

    async def run_then_stop() -> None:
        task = asyncio.ensure_future(collect(first))
        await asyncio.sleep(1.35)  # past the first re-cancel, well before the second one
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_stop())
    stopped_at = time.time()
    classpath, kwargs = first.serialize()
    assert kwargs["deadline"] == deadline
    assert kwargs["pending"][sr_id]["cancel_attempts"] == 2
    second_cancel = cancel_times(emulator, sr_id)[1]
    assert second_cancel <= kwargs["pending"][sr_id]["last_cancel_at"] <= stopped_at

    from airflow.sdk.module_loading import import_string

    restored = serde.deserialize(json.loads(json.dumps(serde.serialize(kwargs))))
    rebuilt = import_string(classpath)(**restored)
    assert rebuilt.serialize() == (classpath, kwargs)
    payload = run_trigger(rebuilt)
    assert payload["outcomes"] == {sr_id: "canceled"}
    times = cancel_times(emulator, sr_id)
    assert len(times) == 3
    # The third cancel waited recancel_after from the second, not from the rebuild...
    assert times[2] - kwargs["pending"][sr_id]["last_cancel_at"] >= recancel_after
    assert times[2] - stopped_at < recancel_after
    # ...and nothing was cancelled in between.
    assert times[1] < stopped_at < times[2]


@pytest.mark.parametrize("bad_id", ["../account", "", "ABCDEF0123456789ABCD", "0" * 15])
def test_a_trigger_with_a_bad_id_is_refused_before_any_request(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, bad_id: str
) -> None:
    good = make_requests(emulator, 1)[0]
    for where in ("pending", "outcomes"):
        kwargs: dict[str, Any] = {
            "pending": {good: {"last_cancel_at": time.time(), "cancel_attempts": 1}},
            "outcomes": {good: "cancel_requested"},
            "deadline": time.time() + 5,
        }
        kwargs[where] = {**kwargs[where], bad_id: kwargs[where][good]}
        with pytest.raises(ValueError, match="is not a Dropbox Sign id"):
            SignatureRequestCanceledTrigger(**kwargs)
    assert emulator.requests_log == []


def test_no_cancel_goes_out_after_the_deadline_even_when_a_round_is_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 requests a second and 30 ids: one round takes ~6 s, far past a 1 s deadline.
    with DropboxSignEmulator(api_keys=(API_KEY,), rate_limit=5, window_seconds=1, cancel_delay=0.2) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_SLOW", connection_uri_json(emu.base_url))
        ids = make_requests(emu, 30)
        started = time.time() - 2.0  # the first cancel went out 2 s ago, without confirmation
        trigger = make_trigger(
            ids, started, timeout=3.0, recancel_after=1.0, dropbox_sign_conn_id="slow", poll_interval=0.2
        )
        payload = run_trigger(trigger)
        deadline = started + 3.0
        late_cancels = [r for r in emu.requests_log if "/cancel/" in r.path and r.time > deadline]
        assert late_cancels == []
        assert time.time() - deadline < 0.2 + 2.0  # ended within one poll interval of it (and a call)
        assert set(payload["outcomes"].values()) <= {"timeout", "canceled"}
        assert payload["status"] == "failure"


def test_kwargs_stored_before_may_recancel_never_recancel(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    # A trigger deferred by an earlier version, rebuilt from its stored kwargs: nothing in them says
    # this wait may cancel, so it only watches, and reports timeout at the deadline.
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(never_complete=True)
    at = cancel_now(dropbox_sign_conn, sr_id)
    trigger = SignatureRequestCanceledTrigger(
        pending={sr_id: {"last_cancel_at": at - 100, "cancel_attempts": 1}},
        outcomes={sr_id: "cancel_requested"},
        deadline=at + 0.8,
        poll_interval=0.1,
        recancel_after=0.2,
    )
    payload = run_trigger(trigger)
    assert payload["outcomes"] == {sr_id: "timeout"}
    assert emulator.cancel_calls(sr_id) == 1
    assert trigger.serialize()[1]["pending"] == {}


def test_a_recancel_that_would_wait_past_the_deadline_is_never_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    # One call a minute by the client-side cap (the API's window may reset any second): after the
    # round's GET, the due re-cancel would wait a minute for the budget.
    with DropboxSignEmulator(api_keys=(API_KEY,)) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_ONE_A_MINUTE", connection_uri_json(emu.base_url, max_requests_per_minute=1)
        )
        sr_id = make_requests(emu, 1)[0]
        now = time.time()
        trigger = make_trigger(
            [sr_id], now - 10, timeout=11.5, recancel_after=5.0, dropbox_sign_conn_id="one_a_minute"
        )
        deadline = trigger.serialize()[1]["deadline"]
        started = time.monotonic()
        payload = run_trigger(trigger)
        assert [r for r in emu.requests_log if r.method == "POST"] == []
        assert payload["outcomes"] == {sr_id: "timeout"}
        assert time.time() - deadline < 0.2 + 1.0  # ended at its deadline, not a minute later
        assert time.monotonic() - started < 5
        assert emu.get_state(sr_id) == "awaiting_signature"


def test_a_trigger_row_of_the_previous_release_resumes(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    # The class path and kwargs exactly as the previous release stored them in the trigger table
    # (after the serde round trip): an upgrade must not strand a deferred task.
    stored_classpath = "dropbox_sign_provider.triggers.signature_request.SignatureRequestCanceledTrigger"
    confirmed, lost = make_requests(emulator, 2)
    at = cancel_now(dropbox_sign_conn, confirmed)
    stored = json.loads(
        json.dumps(
            {
                "dropbox_sign_conn_id": dropbox_sign_conn,
                "pending": {
                    confirmed: {"last_cancel_at": at, "cancel_attempts": 1, "may_recancel": True},
                    lost: {"last_cancel_at": at - 10, "cancel_attempts": 1, "may_recancel": True},
                },
                "deadline": at + 5,
                "outcomes": {confirmed: "cancel_requested", lost: "cancel_requested"},
                "poll_interval": 0.1,
                "recancel_after": 1.0,
                "max_cancel_attempts": 3,
                "on_completed": "fail",
                "errors": {},
                "event_first": False,
            }
        )
    )
    from airflow.sdk.module_loading import import_string

    payload = run_trigger(import_string(stored_classpath)(**serde.deserialize(serde.serialize(stored))))
    # The lost cancel (never sent here) was due at once: re-cancelled under the 60-minute rule.
    assert payload["outcomes"] == {confirmed: "canceled", lost: "canceled"}
    assert len(cancel_times(emulator, lost)) == 1
