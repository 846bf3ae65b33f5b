"""
A clean-up on what a real account answers: requests past their expiry date need no cancel and get
none; a cancel Dropbox Sign refuses (``signature_request_cancel_failed``) is reported with its
reason, and the run goes on and succeeds, as one refusal must not stop a nightly clean-up.
"""

from __future__ import annotations

import time
from typing import Any

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator, OddAnswer
from tests.helpers import DAY, make_requests, task_states, xcom_of

REASON = "The signature request is already closed."


def test_the_clean_up_skips_expired_requests_and_reports_refusals(
    unpaced_account: DropboxSignEmulator, armed: None, cleanup_dag: Any
) -> None:
    account = unpaced_account
    now = time.time()
    stale = make_requests(account, 20, created_at=now - 45 * DAY)
    expired = make_requests(account, 3, created_at=now - 45 * DAY, expires_at=int(now - 3600))
    refused = make_requests(account, 2, created_at=now - 45 * DAY)
    for sr_id in refused:
        account.add_odd_answers(
            OddAnswer.error(
                400,
                "signature_request_cancel_failed",
                REASON,
                method="POST",
                path_prefix=f"/v3/signature_request/cancel/{sr_id}",
                times=10,
            )
        )

    dag_run = cleanup_dag.test()

    assert dag_run.state == "success", task_states(dag_run)
    report = xcom_of(dag_run, "report")
    assert report["counts"] == {"canceled": 20, "refused": 2}
    assert report["refusals"] == {sr_id: f"signature_request_cancel_failed: {REASON}" for sr_id in refused}
    assert report["listed"]["left_alone"] == {"expired": 3}
    assert {account.get_state(sr_id) for sr_id in stale} == {"canceled"}
    assert [account.cancel_calls(sr_id) for sr_id in expired] == [0, 0, 0]
    # Refused once each, and not sent again: neither by a re-cancel nor by a task retry.
    # (The odd answers stand in front of the emulator, so its log counts these calls, not cancel_calls.)
    sent = [entry.path.rsplit("/", 1)[1] for entry in account.requests_log if "/cancel/" in entry.path]
    assert [sent.count(sr_id) for sr_id in refused] == [1, 1]
