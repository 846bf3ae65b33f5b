"""
The example DAGs' code against the emulator over loopback, without ``dag.test()``: parsing them sends
no request and needs no reachable API, and the cancellation audit DAG's trail states what its own
read of each request said, one bad event never spoiling the others.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import (
    DAY,
    EXAMPLE_DAG_IDS,
    closed_port,
    connection_uri_json,
    import_file,
    make_requests,
    parse_dags_folder,
)

AUDIT_DAG_FILE = Path(__file__).parent.parent.parent / "dags" / "dropbox_sign_cancellation_audit.py"


# --- parsing --------------------------------------------------------------------------------------


def test_parsing_sends_no_request(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    make_requests(emulator, 3, created_at=time.time() - 90 * DAY)

    bag = parse_dags_folder()

    assert bag.import_errors == {}
    assert len(bag.dags) == len(EXAMPLE_DAG_IDS)
    assert emulator.requests_log == []


def test_parsing_works_with_an_unreachable_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(f"http://127.0.0.1:{closed_port()}")
    )

    bag = parse_dags_folder()

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXAMPLE_DAG_IDS


# --- the audit DAG's trail ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audit_dag() -> ModuleType:
    """The DAG file, imported as the DAG processor would."""
    return import_file(AUDIT_DAG_FILE, "dropbox_sign_cancellation_audit")


def extra(sr_id: Any, title: str = "Forged title", event_time: int = 1_796_000_000) -> dict[str, Any]:
    """An asset event's extra as the receiver writes it (or as anyone with the REST API could)."""
    return {
        "dropbox_sign_conn_id": "dropbox_sign_default",
        "event_type": "signature_request_canceled",
        "event_time": event_time,
        "signature_request_id": sr_id,
        "title": title,
        "metadata": {},
    }


def gets(emulator: DropboxSignEmulator, sr_id: str) -> int:
    return sum(1 for r in emulator.requests_log if r.method == "GET" and r.path.endswith(sr_id))


@pytest.mark.emulator(cancel_delay=0.0)
def test_the_trail_states_what_its_own_read_said_and_keeps_the_payload_apart(
    audit_dag: ModuleType, emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    created = [emulator.create_signature_request(title="Real title") for _ in range(2)]
    canceled, pending = (r["signature_request_id"] for r in created)
    DropboxSignHook(dropbox_sign_conn).cancel_signature_request(canceled)
    trail = audit_dag.audit_events(DropboxSignHook(dropbox_sign_conn), [extra(canceled), extra(pending)])

    first, second = trail
    assert first["signature_request_id"] == canceled
    assert first["confirmed"] is True
    # A cancelled request answers 410 with no fields: no title is stated as fact.
    assert first["title"] is None
    assert first["unverified"]["title"] == "Forged title"
    assert first["read_at"]
    assert second["signature_request_id"] == pending
    assert second["confirmed"] is False
    assert second["title"] == "Real title"
    assert second["created_at"] == created[1]["created_at"]
    assert second["unverified"]["title"] == "Forged title"
    assert "Forged title" not in json.dumps([first["title"], second["title"]])


def test_a_malformed_id_or_a_failed_read_spoils_no_other_row(
    audit_dag: ModuleType, emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    [good] = make_requests(emulator, 1)
    unknown = "ab" * 20
    events = [
        extra("AB"),
        extra(good.upper()),
        extra("../account"),
        extra(12345),
        extra(None),
        extra(unknown),
        extra(good),
        extra(good),
    ]
    trail = audit_dag.audit_events(DropboxSignHook(dropbox_sign_conn), events)

    assert len(trail) == len(events)
    for row in trail[:4]:
        assert row["signature_request_id"] is None
        assert row["confirmed"] is False
        assert row["read"].startswith("not read: signature_request_id")
    assert trail[4]["read"] == "the event names no signature request"
    assert trail[5]["signature_request_id"] == unknown
    assert trail[5]["confirmed"] is False
    assert trail[6]["signature_request_id"] == trail[7]["signature_request_id"] == good
    assert trail[6]["read"] == "pending"
    # Only well-formed ids are read, each once however many events name it; never the upper-cased one.
    assert gets(emulator, good) == 1
    assert gets(emulator, unknown) == 1
    assert gets(emulator, good.upper()) == 0
    assert {r.path.rsplit("/", 1)[-1] for r in emulator.requests_log if r.method == "GET"} == {good, unknown}
