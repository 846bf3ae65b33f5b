"""A large batch: the task log stays readable, with per-id lines at DEBUG and a summary at INFO."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dropbox_sign_provider.cancellation.outcomes import MAX_LOGGED_TABLE_ROWS, log_outcomes, outcome_table
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import FakeTI, connection_uri_json, make_requests

BATCH = 10_000
#: What "a few hundred lines" allows, at most, for any number of ids.
MAX_INFO_EVENTS = 300


def info_lines(events: list[dict[str, Any]]) -> int:
    """Lines logged at INFO or above, a multi-line event counting each of its lines."""
    return sum(str(e["event"]).rstrip("\n").count("\n") + 1 for e in events if e["log_level"] != "debug")


@pytest.mark.emulator(rate_limit=1_000_000)
def test_a_large_batch_logs_a_summary_not_a_line_per_id(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, log_events: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
        connection_uri_json(emulator.base_url, max_requests_per_minute=1_000_000),
    )
    ids = make_requests(emulator, BATCH - 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    missing = "0f" * 20
    task = CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids=[*ids, signed, missing],
        on_completed="ignore",
        max_cancellations=None,
    )
    ti = FakeTI()
    started = time.monotonic()
    with pytest.raises(Exception, match=f"{missing}: not found") as failed:
        task.execute({"ti": ti})  # type: ignore[arg-type]
    print(f"{BATCH} ids in {time.monotonic() - started:.1f} s, {info_lines(log_events)} lines at INFO")

    assert len(emulator.requests_log) == BATCH + 2  # every id, and a GET for the two refused
    assert "9998 cancel_requested, 1 completed, 1 not_found; 1 failed" in str(failed.value)
    assert info_lines(log_events) <= MAX_INFO_EVENTS
    summary = [e["event"] for e in log_events if str(e["event"]).startswith("Dropbox Sign cancellations")]
    assert summary == [
        "Dropbox Sign cancellations: 9998 cancel_requested, 1 completed, 1 not_found; 1 failed: "
        f"{missing}: not found (404): no such signature request for this account (the table of all "
        f"{BATCH} ids is logged at DEBUG)"
    ]


def test_up_to_the_limit_the_table_is_logged_and_ends_on_its_own_line(
    log_events: list[dict[str, Any]],
) -> None:
    from airflow.sdk import BaseOperator

    log = BaseOperator(task_id="t").log
    few = {f"{n:040x}": "canceled" for n in range(MAX_LOGGED_TABLE_ROWS)}
    log_outcomes(log, "Dropbox Sign cancellations", few, "100 canceled")
    log_outcomes(log, "Dropbox Sign cancellations", {**few, "f" * 40: "canceled"}, "101 canceled")

    first, second = (e["event"] for e in log_events)
    # A console log appends the logger's name to the event: after the line break, not to the last row.
    assert first == f"Dropbox Sign cancellations: 100 canceled\n{outcome_table(few)}\n"
    assert "\n" not in second


def test_a_console_log_puts_the_logger_name_below_the_table(capfd: pytest.CaptureFixture[str]) -> None:
    from airflow.sdk import BaseOperator

    task = BaseOperator(task_id="t")
    outcomes = {"ab" * 20: "canceled", "cd" * 20: "timeout"}
    log_outcomes(task.log, "Dropbox Sign cancellations", outcomes, "1 canceled, 1 timeout")
    lines = capfd.readouterr().out.splitlines()
    last_row = next(i for i, line in enumerate(lines) if line.startswith("cd" * 20))
    assert lines[last_row].rstrip() == f"{'cd' * 20}  timeout"
    assert lines[last_row + 1].strip().startswith("[airflow.task")
