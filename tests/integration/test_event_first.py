"""
Event-first confirmation: an event on the account's board of recent events wakes its id, one GET
confirms it, and without events the wait polls as before.

The board is an Airflow Variable; here it is served by Airflow's environment-variable secrets
backend (``AIRFLOW_VAR_...``), written with the function the callback receiver uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dropbox_sign_provider.events import wakeups
from dropbox_sign_provider.events.board import add_recent_event, recent_events_variable
from dropbox_sign_provider.events.callback import event_hash, parse_callback
from dropbox_sign_provider.events.wakeups import EVENT_CHECK_INTERVAL
from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import (
    API_KEY,
    Receiver,
    cancel_now,
    make_requests,
    make_trigger,
    operator,
    run,
    run_trigger,
    sensor,
)

CONN = "dropbox_sign_default"


class Board:
    """The account's board of recent events, as the receiver writes it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, conn_id: str = CONN) -> None:
        self.env = "AIRFLOW_VAR_" + recent_events_variable(conn_id).upper()
        self.monkeypatch = monkeypatch
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def record(self, sr_id: str, event_type: str = "signature_request_canceled") -> None:
        event_time = str(int(time.time()))
        payload = {
            "event": {
                "event_type": event_type,
                "event_time": event_time,
                "event_hash": event_hash(API_KEY, event_time, event_type),
            },
            "signature_request": {"signature_request_id": sr_id},
        }
        self.record_payload(payload)

    def record_payload(self, payload: dict[str, Any]) -> None:
        """Put a callback's ``json`` field on the board, as the receiver does once it verified it."""
        with self.lock:
            board = add_recent_event(os.environ.get(self.env), parse_callback(json.dumps(payload)))
            if board is not None:
                self.monkeypatch.setenv(self.env, json.dumps(board))

    def record_when_canceled(self, emulator: DropboxSignEmulator, ids: list[str]) -> None:
        """Record each id's canceled event once the emulator has cancelled it, as Dropbox Sign sends it."""

        def watch() -> None:
            waiting = set(ids)
            while waiting and not self.stop.wait(0.05):
                for sr_id in [i for i in waiting if emulator.get_state(i) == "canceled"]:
                    self.record(sr_id)
                    waiting.discard(sr_id)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        self.threads.append(thread)


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Iterator[Board]:
    recorder = Board(monkeypatch)
    yield recorder
    recorder.stop.set()
    for thread in recorder.threads:
        thread.join()


def gets(emulator: DropboxSignEmulator, sr_id: str) -> int:
    return sum(1 for r in emulator.requests_log if r.method == "GET" and r.path.endswith(sr_id))


def cancelled_with_events(emulator: DropboxSignEmulator, board: Board, n: int) -> tuple[list[str], float]:
    """``n`` new requests, cancelled now through ``dropbox_sign_default``; each one's canceled event goes
    on the board once the emulator has cancelled it. Returns the ids and when they were cancelled."""
    ids = make_requests(emulator, n)
    at = cancel_now(CONN, *ids)
    board.record_when_canceled(emulator, ids)
    return ids, at


def test_an_event_confirms_with_one_read_and_no_poll(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, board: Board
) -> None:
    ids, at = cancelled_with_events(emulator, board, 3)
    trigger = make_trigger(ids, at, timeout=120, poll_interval=300, event_first=True)
    payload = run_trigger(trigger)
    assert payload["outcomes"] == dict.fromkeys(ids, "canceled")
    assert time.time() - at < 3 * EVENT_CHECK_INTERVAL + 2
    # One GET per id, after its event; the 300 s poll never came.
    assert [gets(emulator, sr_id) for sr_id in ids] == [1, 1, 1]


@pytest.mark.emulator(cancel_delay=3.0)
def test_an_event_is_a_wake_up_not_a_proof(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, board: Board
) -> None:
    # An event naming an id that is not cancelled yet (forged payload, or an earlier event of
    # the request): one GET says so, the id keeps waiting and the fallback poll confirms it.
    [sr_id] = make_requests(emulator, 1)
    at = cancel_now(dropbox_sign_conn, sr_id)
    board.record(sr_id)
    trigger = make_trigger([sr_id], at, timeout=60, poll_interval=5, event_first=True)
    payload = run_trigger(trigger)
    assert payload["outcomes"] == {sr_id: "canceled"}
    assert gets(emulator, sr_id) == 2


def test_without_events_the_wait_polls(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    ids = make_requests(emulator, 2)
    at = cancel_now(dropbox_sign_conn, *ids)
    trigger = make_trigger(ids, at, timeout=60, poll_interval=1, event_first=True)
    assert run_trigger(trigger)["outcomes"] == dict.fromkeys(ids, "canceled")
    assert [gets(emulator, sr_id) for sr_id in ids] == [1, 1]


def test_events_for_other_requests_wake_nothing(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, board: Board
) -> None:
    [sr_id] = make_requests(emulator, 1)
    at = cancel_now(dropbox_sign_conn, sr_id)
    for other in ("ab" * 20, "cd" * 20):
        board.record(other)
    trigger = make_trigger([sr_id], at, timeout=60, poll_interval=3, event_first=True)
    assert run_trigger(trigger)["outcomes"] == {sr_id: "canceled"}
    assert gets(emulator, sr_id) == 1
    assert gets(emulator, "ab" * 20) == 0


@pytest.mark.emulator(cancel_delay=1.0)
def test_the_triggers_of_one_process_share_one_board_reader(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, board: Board
) -> None:
    ids, at = cancelled_with_events(emulator, board, 30)
    triggers = [make_trigger([sr_id], at, timeout=60, poll_interval=300, event_first=True) for sr_id in ids]

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))

    reads_before, started = wakeups.board_reads, time.time()
    events = asyncio.run(run_all())
    reads, elapsed = wakeups.board_reads - reads_before, time.time() - started
    assert [event.payload["outcomes"] for event in events] == [{sr_id: "canceled"} for sr_id in ids]
    # One read per check for all 30 triggers, not one per trigger.
    assert reads <= elapsed / EVENT_CHECK_INTERVAL + 2, (reads, elapsed)
    assert sum(gets(emulator, sr_id) for sr_id in ids) == 30


@pytest.mark.parametrize(
    ("cause", "named"),
    [
        pytest.param("refused", "access to variables denied", id="variable-refused"),
        pytest.param("encrypted", "encrypted with another fernet_key", id="not-a-board"),
    ],
)
def test_a_board_that_cannot_be_read_means_polling(
    emulator: DropboxSignEmulator,
    dropbox_sign_conn: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    board: Board,
    cause: str,
    named: str,
) -> None:
    if cause == "refused":
        from airflow.sdk import Variable

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise PermissionError("access to variables denied")

        monkeypatch.setattr(Variable, "get", refuse)
    else:
        # What a process with another Fernet key than the receiver's reads.
        monkeypatch.setenv(board.env, "gAAAAABrDaB87IMVk_fA8md_mC7vFfEdvcSoC3EwX8myHcFPyHK")
    ids = make_requests(emulator, 2)
    at = cancel_now(dropbox_sign_conn, *ids)
    trigger = make_trigger(ids, at, timeout=60, poll_interval=1, event_first=True)
    assert run_trigger(trigger)["outcomes"] == dict.fromkeys(ids, "canceled")
    warnings = [line for line in capfd.readouterr().out.splitlines() if "cannot be read" in line]
    assert len(warnings) == 1
    assert named in warnings[0]
    assert "polling every poll interval" in warnings[0]


def test_the_operator_waits_for_events_in_the_task(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, board: Board
) -> None:
    ids = make_requests(emulator, 2)
    board.record_when_canceled(emulator, ids)
    task = operator(ids, wait_for_confirmation=True, event_first=True, poke_interval=300, timeout=60)
    assert run(task) == dict.fromkeys(ids, "canceled")
    assert [gets(emulator, sr_id) for sr_id in ids] == [1, 1]


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_the_sensor_waits_for_events(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, board: Board, deferrable: bool
) -> None:
    ids = make_requests(emulator, 2)
    cancel_now(dropbox_sign_conn, *ids)
    board.record_when_canceled(emulator, ids)
    task = sensor(
        {i: "cancel_requested" for i in ids}, deferrable, event_first=True, poke_interval=300, timeout=60
    )
    assert run(task) == dict.fromkeys(ids, "canceled")
    assert [gets(emulator, sr_id) for sr_id in ids] == [1, 1]


@pytest.mark.emulator(cancel_delay=1.0)
@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_one_signer_of_two_signing_wakes_the_sensor_which_keeps_waiting_for_the_cancel(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, board: Board, receiver: Receiver, deferrable: bool
) -> None:
    # A partly signed request is still awaiting signature, and cancellable: its per-signer
    # signature_request_signed event wakes the wait, one GET says it is not cancelled yet, and the
    # cancellation is confirmed by the 410 as usual.
    emulator.callback_url = receiver.url
    [sr_id] = make_requests(emulator, 1, signers=[("A", "a@example.com"), ("B", "b@example.com")])
    emulator.sign(sr_id, signer=0)
    (signed,) = receiver.wait_for(1)
    assert signed.payload()["event"]["event_type"] == "signature_request_signed"
    board.record_payload(signed.payload())
    cancel_now(dropbox_sign_conn, sr_id)
    board.record_when_canceled(emulator, [sr_id])
    task = sensor({sr_id: "cancel_requested"}, deferrable, event_first=True, poke_interval=300, timeout=60)
    assert run(task) == {sr_id: "canceled"}
    # One GET woken by the signer's event (200, still awaiting), one by the canceled event (410).
    assert [r.status for r in emulator.requests_log if r.method == "GET"] == [200, 410]
    assert [item.payload()["event"]["event_type"] for item in receiver.wait_for(2)] == [
        "signature_request_signed",
        "signature_request_canceled",
    ]


def test_event_first_is_kept_by_a_rebuilt_trigger() -> None:
    trigger = make_trigger(["ab" * 20], time.time(), event_first=True)
    _classpath, kwargs = trigger.serialize()
    assert kwargs["event_first"] is True
    kwargs.pop("event_first")
    # Kwargs stored before event-first existed: a polling trigger.
    assert type(trigger)(**kwargs).event_first is False


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_event_first_must_be_a_boolean(value: Any) -> None:
    if value is not None:  # a task's None: the deployment's [dropbox_sign] event_first
        with pytest.raises(ValueError, match=f"event_first {value!r} must be True or False"):
            operator(["ab" * 20], event_first=value)
        with pytest.raises(ValueError, match=f"event_first {value!r} must be True or False"):
            sensor(["ab" * 20], True, event_first=value)
    # The trigger is given the value the task settled on: it must be a boolean.
    with pytest.raises(ValueError, match=f"event_first {value!r} must be True or False"):
        make_trigger(["ab" * 20], time.time(), event_first=value)
