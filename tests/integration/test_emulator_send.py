"""``POST /v3/signature_request/send``: the multipart form the contract suite sends, and its own window."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import API_KEY, Receiver

AUTH = (API_KEY, "")
FILES = {"files[0]": ("nda.txt", b"Please sign.", "text/plain")}
FORM = {
    "test_mode": "1",
    "title": "NDA",
    "subject": "Your NDA",
    "message": "Please sign.",
    "signers[0][name]": "Ann",
    "signers[0][email_address]": "ann@example.com",
    "signers[1][name]": "Bob",
    "signers[1][email_address]": "bob@example.com",
    "metadata[run_id]": "r-1",
}


def send(emulator: DropboxSignEmulator, data: dict[str, Any], files: Any = FILES) -> requests.Response:
    return requests.post(
        f"{emulator.base_url}/signature_request/send", data=data, files=files, auth=AUTH, timeout=10
    )


def test_a_sent_request_is_stored_as_the_account_sent_it_and_reported(
    make_emulator: Any, receiver: Receiver
) -> None:
    emulator = make_emulator(callback_url=receiver.url)
    answer = send(emulator, FORM)
    assert answer.status_code == 200, answer.text
    sent = answer.json()["signature_request"]
    assert (sent["title"], sent["subject"], sent["message"]) == ("NDA", "Your NDA", "Please sign.")
    assert (sent["test_mode"], sent["metadata"], sent["is_complete"]) == (True, {"run_id": "r-1"}, False)
    assert sent["requester_email_address"] == emulator.email
    assert [(s["signer_name"], s["signer_email_address"], s["status_code"]) for s in sent["signatures"]] == [
        ("Ann", "ann@example.com", "awaiting_signature"),
        ("Bob", "bob@example.com", "awaiting_signature"),
    ]
    sr_id = sent["signature_request_id"]
    got = requests.get(f"{emulator.base_url}/signature_request/{sr_id}", auth=AUTH, timeout=10)
    assert got.json()["signature_request"] == sent
    listed = requests.get(
        f"{emulator.base_url}/signature_request/list",
        params={"query": "from:me AND r-1"},
        auth=AUTH,
        timeout=10,
    )
    assert [r["signature_request_id"] for r in listed.json()["signature_requests"]] == [sr_id]
    (event,) = receiver.wait_for(1)
    assert event.payload()["event"]["event_type"] == "signature_request_sent"
    assert event.payload()["signature_request"] == sent


def test_the_title_defaults_to_the_first_files_name_and_test_mode_to_false(
    emulator: DropboxSignEmulator,
) -> None:
    form = {k: v for k, v in FORM.items() if k not in ("title", "subject", "message", "test_mode")}
    sent = send(emulator, form).json()["signature_request"]
    assert (sent["title"], sent["test_mode"]) == ("nda.txt", False)
    assert (sent["subject"], sent["message"]) == ("nda.txt", "Please sign and return.")


@pytest.mark.parametrize(
    ("change", "files", "path"),
    [
        ({"cc_email_addresses[0]": "c@example.com", "client_id": "x"}, FILES, "cc_email_addresses[0]"),
        ({}, None, "files"),
        ({k: None for k in FORM if k.startswith("signers")}, FILES, "signers"),
        ({"signers[1][name]": ""}, FILES, "signers[1][name]"),
        ({"signers[1][email_address]": "bob"}, FILES, "signers[1][email_address]"),
        ({"test_mode": "maybe"}, FILES, "test_mode"),
        ({"title": "x" * 256}, FILES, "title"),
        ({"metadata[" + "k" * 41 + "]": "v"}, FILES, "metadata[" + "k" * 41 + "]"),
        ({"title": None}, {**FILES, "title": ("t.txt", b"x")}, "title"),
    ],
)
def test_what_the_emulator_does_not_take_is_refused_with_400_naming_it(
    emulator: DropboxSignEmulator, change: dict[str, Any], files: Any, path: str | None
) -> None:
    form = {k: v for k, v in {**FORM, **change}.items() if v is not None}
    answer = send(emulator, form, files)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["error_name"] == "bad_request"
    assert error.get("error_path") == path
    if path == "cc_email_addresses[0]":
        assert "cc_email_addresses[0], client_id" in error["error_msg"]
    assert emulator.signature_requests() == []


def test_a_json_body_is_refused_once_the_caller_is_authenticated(emulator: DropboxSignEmulator) -> None:
    url = f"{emulator.base_url}/signature_request/send"
    assert requests.post(url, json=FORM, auth=("wrong", ""), timeout=10).status_code == 401
    answer = requests.post(url, json=FORM, auth=AUTH, timeout=10)
    assert answer.status_code == 400
    assert "multipart/form-data" in answer.json()["error"]["error_msg"]


@pytest.mark.emulator(high_tier_rate_limit=2, rate_limit=5)
def test_send_counts_against_the_high_tier_window_apart_from_the_others(
    emulator: DropboxSignEmulator,
) -> None:
    answers = [send(emulator, FORM) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["X-RateLimit-Limit"] for a in answers] == ["2", "2", "2"]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    assert answers[2].json()["error"]["error_name"] == "exceeded_rate"
    account = requests.get(f"{emulator.base_url}/account", auth=AUTH, timeout=10)
    assert (account.status_code, account.headers["X-RateLimit-Limit"]) == (200, "5")
    assert account.headers["X-RateLimit-Remaining"] == "4"
