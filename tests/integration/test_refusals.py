"""
What a real account answers beside "queued": a request past its expiry date, and a cancel Dropbox
Sign refuses (``signature_request_cancel_failed``: not the sender's, or already closed). Ids a
person named: the others are cancelled and confirmed, then the task fails naming each refusal and
Dropbox Sign's reason, without a retry. Expired ones need no cancel and fail nothing.
"""

from __future__ import annotations

import time

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from dropbox_sign_provider.testing import DropboxSignEmulator, OddAnswer
from tests.helpers import FakeTI, make_requests, operator, run


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_named_ids_refused_fail_the_task_after_the_others_are_confirmed(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    first, second = make_requests(emulator, 2)
    received = make_requests(emulator, 1, requester_email_address="hr@other.example")[0]
    expired = make_requests(emulator, 1, expires_at=int(time.time()) - 60)[0]
    ti = FakeTI()
    task = operator([first, received, expired, second], wait_for_confirmation=True, deferrable=deferrable)

    with pytest.raises(AirflowFailException) as failed:
        run(task, ti)

    message = str(failed.value)
    assert f"1 failed: {received}: signature_request_cancel_failed: " in message
    assert "2 canceled, 1 expired, 1 refused" in message
    assert [emulator.get_state(i) for i in (first, second)] == ["canceled", "canceled"]
    assert emulator.get_state(received) == "awaiting_signature"
    # A refusal is a verdict: sent once, never again as if it were transient.
    assert emulator.cancel_calls(received) == 1
    assert ti.xcoms["refusals"] == {
        received: "signature_request_cancel_failed: Only the sender of a signature request can cancel it."
    }


def test_an_expired_request_is_nothing_to_cancel(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    expired = make_requests(emulator, 1, expires_at=int(time.time()) - 60)[0]
    assert run(operator(expired, wait_for_confirmation=True)) == {expired: "expired"}
    # Its preview says so before anything is sent.
    assert run(operator(expired, dry_run=True)) == {expired: "expired"}


def test_an_expired_request_whose_cancel_is_accepted_ends_expired(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    # Whether Dropbox Sign refuses the cancel of an expired request is not documented: an accepted
    # cancel that never takes effect must end the same way, not wait for a confirmation.
    expired = make_requests(emulator, 1, expires_at=int(time.time()) - 60)[0]
    emulator.add_odd_answers(
        OddAnswer(
            200,
            {"Content-Type": "application/json"},
            "{}",
            method="POST",
            path_prefix="/v3/signature_request/cancel/",
        )
    )
    assert run(operator(expired, wait_for_confirmation=True)) == {expired: "expired"}
