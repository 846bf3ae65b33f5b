"""
What the clean-up costs the account, counted by the emulator: a dry run sends only one
``GET /account`` (the account's own address) and the list pages (the list answers hold every request
whole, so nothing is read again), and an armed run sends one cancel and one confirming read per stale
request, plus the same.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import DAY, make_requests, task_states, xcom_of

#: A few hundred stale requests, some fresh ones, and some the clean-up must leave alone.
STALE = 260
PAGE = 100


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch, unpaced_account: DropboxSignEmulator) -> DropboxSignEmulator:
    # The account's limit is raised so that the run is not paced, and the deployment's cap so that
    # it is not asked; the counts are what they are.
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__MAX_CANCELLATIONS", "1000")
    emulator = unpaced_account
    now = time.time()
    emulator.stale = make_requests(emulator, STALE, created_at=now - 45 * DAY)  # type: ignore[attr-defined]
    make_requests(emulator, 20, created_at=now - DAY)
    make_requests(emulator, 5, created_at=now - 60 * DAY, is_complete=True)
    make_requests(emulator, 5, created_at=now - 60 * DAY, is_declined=True)
    make_requests(emulator, 5, created_at=now - 60 * DAY, has_error=True)
    make_requests(emulator, 5, created_at=now - 60 * DAY, expires_at=now - 3600)
    # Sent to this account by someone else: the search leaves them out.
    make_requests(emulator, 20, created_at=now - 60 * DAY, requester_email_address="hr@other.example")
    return emulator


def calls(emulator: DropboxSignEmulator) -> Counter[str]:
    """Each call the emulator answered, by kind: list, get, cancel, other."""
    kinds: Counter[str] = Counter()
    for entry in emulator.requests_log:
        path = entry.path
        if path.startswith("/v3/signature_request/list"):
            kinds["list"] += 1
        elif path.startswith("/v3/signature_request/cancel/"):
            kinds["cancel"] += 1
        elif path.startswith("/v3/signature_request/") and entry.method == "GET":
            kinds["get"] += 1
        else:
            kinds[f"{entry.method} {path}"] += 1
    return kinds


def test_a_dry_run_sends_only_the_account_and_the_list_pages(
    account: DropboxSignEmulator, fast_confirmations: None, armed: None, cleanup_dag: Any
) -> None:
    dag_run = cleanup_dag.test(run_conf={"dry_run": True, "max_cancellations": 1000})

    assert dag_run.state == "success", task_states(dag_run)
    report = xcom_of(dag_run, "report")
    assert report["counts"] == {"would_cancel": STALE}
    # The search leaves out received, fresh and complete requests; what it lists is read in pages of 100.
    listed = report["listed"]["listed"]
    assert calls(account) == {"GET /v3/account": 1, "list": math.ceil(listed / PAGE)}


def test_an_armed_run_sends_one_cancel_and_one_read_per_stale_request(
    account: DropboxSignEmulator, fast_confirmations: None, armed: None, cleanup_dag: Any
) -> None:
    dag_run = cleanup_dag.test(run_conf={"max_cancellations": 1000})

    assert dag_run.state == "success", task_states(dag_run)
    assert xcom_of(dag_run, "report")["counts"] == {"canceled": STALE}
    listed = xcom_of(dag_run, "report")["listed"]["listed"]
    assert calls(account) == {
        "GET /v3/account": 1,
        "list": math.ceil(listed / PAGE),
        "cancel": STALE,
        "get": STALE,
    }
    assert {account.get_state(sr_id) for sr_id in account.stale} == {"canceled"}  # type: ignore[attr-defined]
