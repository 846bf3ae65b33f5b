"""
The cancellation audit DAG's trail, against the emulator over loopback: what it states comes from
its own read of each request, and one bad event never spoils the others.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import make_requests

AUDIT_DAG_FILE = Path(__file__).parent.parent.parent / "dags" / "dropbox_sign_cancellation_audit.py"


@pytest.fixture(scope="module")
def audit_dag() -> ModuleType:
    """The DAG file, imported as the DAG processor would."""
    spec = importlib.util.spec_from_file_location("dropbox_sign_cancellation_audit", AUDIT_DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
