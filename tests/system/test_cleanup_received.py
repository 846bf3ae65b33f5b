"""
The clean-up cancels only what the account sent: lists hold the requests it received too, which only
their sender may cancel (Dropbox Sign answers 400 ``signature_request_cancel_failed``). The search
asks ``from:me``; each listed request's ``requester_email_address`` is checked against the
account's own address as well, so an index that ignores the field cannot widen the selection.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import DAY, make_requests, task_states, xcom_of

SENT = 130
RECEIVED = 20


@pytest.fixture
def account(unpaced_account: DropboxSignEmulator) -> DropboxSignEmulator:
    emulator = unpaced_account
    now = time.time()
    emulator.sent = make_requests(emulator, SENT, created_at=now - 45 * DAY)  # type: ignore[attr-defined]
    # Sent to this account's user by other senders, as old as the stale ones, and incomplete.
    emulator.received = make_requests(  # type: ignore[attr-defined]
        emulator,
        RECEIVED,
        created_at=now - 45 * DAY,
        requester_email_address="contracts@vendor.example",
        signers=[("Me", emulator.email)],
    )
    return emulator


@pytest.mark.parametrize("index_ignores_from", [False, True], ids=["search", "index-ignores-from"])
def test_the_armed_clean_up_cancels_what_the_account_sent_and_nothing_it_received(
    account: DropboxSignEmulator, armed: None, cleanup_dag: Any, index_ignores_from: bool
) -> None:
    if index_ignores_from:
        account.set_fault(search_ignores=["from"])

    dag_run = cleanup_dag.test()

    assert dag_run.state == "success", task_states(dag_run)
    report = xcom_of(dag_run, "report")
    assert report["counts"] == {"canceled": SENT}
    assert {account.get_state(sr_id) for sr_id in account.sent} == {"canceled"}  # type: ignore[attr-defined]
    for sr_id in account.received:  # type: ignore[attr-defined]
        assert account.cancel_calls(sr_id) == 0
        assert account.get_state(sr_id) == "awaiting_signature"
    listed = report["listed"]
    assert listed["search"].startswith("from:me AND complete:false AND created:[* TO ")
    # The search excluded them; where the index did not, the check of each request did, and says so.
    assert listed["left_alone"] == ({"received": RECEIVED} if index_ignores_from else {})
    assert listed["listed"] == SENT + (RECEIVED if index_ignores_from else 0)
