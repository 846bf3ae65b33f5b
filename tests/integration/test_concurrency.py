"""
Several workers drawing on one account: four processes cancel and confirm 100 ids each against an
emulator that allows 100 requests per 2-second window for the whole account.

Each process only knows of the others through the ``X-RateLimit-*`` headers of its own answers,
as separate Airflow workers would. All 400 must be cancelled and confirmed, and the 429s that the
sharing costs must stay within a bound that follows from how the budget reacts to a 429.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections import Counter
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import FakeTI, connection_uri_json, make_requests, operator

PROCESSES = 4
IDS_PER_PROCESS = 100
RATE_LIMIT = 100
WINDOW_SECONDS = 2.0


def worker(ids: list[str], go: Any, results: Any) -> None:
    """One worker process: wait for the start signal, then cancel and confirm its ids."""
    go.wait(60)
    task = operator(ids, wait_for_confirmation=True, poke_interval=0.5, timeout=300.0, recancel_after=120.0)
    try:
        outcomes = task.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    except Exception as exc:
        results.put({"ids": ids, "outcomes": None, "error": f"{type(exc).__name__}: {exc}"})
    else:
        results.put({"ids": ids, "outcomes": outcomes, "error": None})


@pytest.fixture
def shared_account(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> DropboxSignEmulator:
    # The client-side cap allows what the account allows: only the API's headers can keep four
    # processes from overrunning it together.
    per_minute = int(RATE_LIMIT * 60 / WINDOW_SECONDS)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
        connection_uri_json(emulator.base_url, max_requests_per_minute=per_minute),
    )
    return emulator


@pytest.mark.emulator(rate_limit=RATE_LIMIT, window_seconds=WINDOW_SECONDS)
def test_four_workers_share_one_account_budget(shared_account: DropboxSignEmulator) -> None:
    emulator = shared_account
    ids = make_requests(emulator, PROCESSES * IDS_PER_PROCESS)
    bystanders = make_requests(emulator, 10)
    chunks = [ids[i : i + IDS_PER_PROCESS] for i in range(0, len(ids), IDS_PER_PROCESS)]

    # Forked children are separate processes, each with its own budget, started without re-importing Airflow.
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    processes = [context.Process(target=worker, args=(chunk, go, results), daemon=True) for chunk in chunks]
    for process in processes:
        process.start()
    started = time.monotonic()
    go.set()
    try:
        reports = [results.get(timeout=240) for _ in processes]
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    seconds = time.monotonic() - started

    assert [p.exitcode for p in processes] == [0] * PROCESSES
    assert [r["error"] for r in reports] == [None] * PROCESSES
    outcomes: dict[str, str] = {}
    for report in reports:
        assert set(report["outcomes"]) == set(report["ids"])
        outcomes.update(report["outcomes"])
    assert outcomes == dict.fromkeys(ids, "canceled")
    assert {emulator.get_state(sr_id) for sr_id in ids} == {"canceled"}
    # A 429 never reaches the API: however often a cancel was retried, it was sent once.
    assert {emulator.cancel_calls(sr_id) for sr_id in ids} == {1}
    for sr_id in bystanders:
        assert emulator.cancel_calls(sr_id) == 0
        assert emulator.get_state(sr_id) == "awaiting_signature"

    log = list(emulator.requests_log)
    windows = Counter(math.floor(entry.time / WINDOW_SECONDS) for entry in log)
    accepted = Counter(math.floor(entry.time / WINDOW_SECONDS) for entry in log if entry.status != 429)
    too_many = sum(1 for entry in log if entry.status == 429)
    bound = PROCESSES * len(windows)
    print(
        f"\n\nShared account: {PROCESSES} processes x {IDS_PER_PROCESS} ids, {RATE_LIMIT} requests per "
        f"{WINDOW_SECONDS:g} s window\n"
        f"  {len(ids)} cancelled and confirmed in {seconds:.1f} s over {len(windows)} windows\n"
        f"  {len(log)} API calls, {too_many} answered 429 (bound {bound}: one per process per window), "
        f"at most {max(accepted.values())} accepted in a window"
    )

    # The bound: a process that gets a 429 marks the window spent (the answer's headers say so) and
    # sends nothing more until its reset, and each worker has one call in flight at a time; so each
    # process meets at most one 429 per window. Without the headers it would be hundreds.
    assert too_many <= bound
    assert max(accepted.values()) <= RATE_LIMIT
