"""Behaviour of the Dropbox Sign emulator, driven over real loopback HTTP."""

from __future__ import annotations

import datetime
import email.parser
import email.policy
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from dropbox_sign_provider.testing import DropboxSignEmulator, LoggedRequest, OddAnswer, event_hash
from dropbox_sign_provider.testing import emulator as emulator_module

KEY = ("test-key", "")
CANCEL_DELAY = 0.2
EXAMPLES = Path(__file__).parent.parent / "data" / "dropbox-sign" / "examples"
# What the tests ask the emulator to bind, and expect it to refuse unless allowed.
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104


@pytest.fixture
def emu() -> Iterator[DropboxSignEmulator]:
    with DropboxSignEmulator(cancel_delay=CANCEL_DELAY) as emulator:
        yield emulator


def call(
    emulator: DropboxSignEmulator, method: str, path: str, auth: Any = KEY, **kwargs: Any
) -> requests.Response:
    return requests.request(method, emulator.base_url + path, auth=auth, timeout=10, **kwargs)


def assert_error(response: requests.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["error_name"] == name
    assert isinstance(body["error"]["error_msg"], str)
    assert body["error"]["error_msg"]
    return dict(body["error"])


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def day(text: str, hour: int = 12) -> int:
    moment = datetime.datetime.fromisoformat(text).replace(hour=hour, tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


class FakeClock:
    """Stands in for the emulator module's ``time``: a settable epoch clock over real monotonic time."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.skew = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic() + self.skew


# -- event hash ------------------------------------------------------------------------------------


def test_event_hash_matches_the_official_test_vector() -> None:
    key = "324e3b0840f065eb51f3fd63231d0d33daa35d4ed10d27718839e81737065782"
    expected = "ff8b03439122f9160500c3fb855bdee5a9ccba5fff27d3b258745d8f3074832f"
    assert event_hash(key, "1669926463", "account_confirmed") == expected
    assert event_hash(key, 1669926463, "account_confirmed") == expected
    assert event_hash(key, "1669926464", "account_confirmed") != expected


# -- lifecycle and seeding -------------------------------------------------------------------------


def test_start_stop_and_addresses() -> None:
    emulator = DropboxSignEmulator()
    with pytest.raises(RuntimeError):
        _ = emulator.port
    assert emulator.start() is emulator
    port = emulator.port
    assert emulator.base_url == f"http://127.0.0.1:{port}/v3"
    assert emulator.admin_url == f"http://127.0.0.1:{port}/_emulator"
    assert emulator.url == f"http://127.0.0.1:{port}"
    assert call(emulator, "GET", "/account").status_code == 200
    emulator.stop()
    emulator.stop()
    with pytest.raises(requests.ConnectionError):
        call(emulator, "GET", "/account")


def test_start_fails_on_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        emulator = DropboxSignEmulator(port=busy.getsockname()[1])
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            emulator.start()
        emulator.stop()


def test_created_request_has_every_field_of_the_official_example(emu: DropboxSignEmulator) -> None:
    official = json.loads((EXAMPLES / "SignatureRequestGetResponse.json").read_text())["signature_request"]
    created = emu.create_signature_request(
        signature_request_id="fa5c8a0b0f492d768749333ad6fcc214c111e967",
        title="Purchase Agreement",
        is_complete=True,
        signers=[("John Doe", "john@example.com")],
    )
    assert set(official) <= set(created)
    assert set(official["signatures"][0]) <= set(created["signatures"][0])
    assert created["details_url"] == official["details_url"]
    assert created["signatures"][0]["status_code"] == "signed"
    assert created["signatures"][0]["signer_email_address"] == "john@example.com"
    assert created["has_error"] is False
    assert created["requester_email_address"] == "me@example.com"
    answered = call(emu, "GET", "/signature_request/fa5c8a0b0f492d768749333ad6fcc214c111e967").json()
    assert answered == {"signature_request": created}


def test_created_request_defaults_and_signers(emu: DropboxSignEmulator) -> None:
    before = int(time.time())
    created = emu.create_signature_request(
        signers=[
            {"name": "Ann", "email": "ann@example.com", "status_code": "signed"},
            ("Bob", "bob@example.com"),
        ],
        metadata={"team": "legal"},
    )
    request_id = created["signature_request_id"]
    assert len(request_id) == 40
    assert all(char in "0123456789abcdef" for char in request_id)
    assert before <= created["created_at"] <= int(time.time())
    assert created["expires_at"] is None
    assert created["metadata"] == {"team": "legal"}
    assert [s["status_code"] for s in created["signatures"]] == ["signed", "awaiting_signature"]
    assert created["is_complete"] is False
    assert created["signing_url"] == f"https://app.hellosign.com/sign/{request_id}"
    declined = emu.create_signature_request(is_declined=True, signers=[("A", "a@x.io"), ("B", "b@x.io")])
    assert [s["status_code"] for s in declined["signatures"]] == ["declined", "awaiting_signature"]
    assert emu.get_state(request_id) == "awaiting_signature"
    assert emu.get_state(declined["signature_request_id"]) == "declined"


def test_created_request_rejects_bad_fields(emu: DropboxSignEmulator) -> None:
    emu.create_signature_request(signature_request_id="abc123")
    with pytest.raises(ValueError, match="already exists"):
        emu.create_signature_request(signature_request_id="abc123")
    with pytest.raises(TypeError, match="titel"):
        emu.create_signature_request(titel="typo")
    with pytest.raises(ValueError, match="both complete and declined"):
        emu.create_signature_request(is_complete=True, is_declined=True)
    with pytest.raises(KeyError):
        emu.get_state("missing")


def test_expired_request_reports_expired_signatures(emu: DropboxSignEmulator) -> None:
    created = emu.create_signature_request(expires_at=int(time.time()) - 10)
    assert [s["status_code"] for s in created["signatures"]] == ["expired"]
    fresh = emu.create_signature_request(expires_at=int(time.time()) + 3600)
    assert [s["status_code"] for s in fresh["signatures"]] == ["awaiting_signature"]


# -- authentication and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "headers"),
    [
        (("test-key", ""), {}),
        (None, {"Authorization": "Bearer test-token"}),
        (("second-key", ""), {}),
        (("test-key", "a-password"), {}),
    ],
    ids=["basic", "bearer", "second-key", "key-with-a-password"],
)
def test_valid_credentials_are_accepted(auth: Any, headers: dict[str, str]) -> None:
    with DropboxSignEmulator(api_keys=("test-key", "second-key"), account_id="a" * 40) as emulator:
        response = call(emulator, "GET", "/account", auth=auth, headers=headers)
    assert response.status_code == 200
    account = response.json()["account"]
    assert account["account_id"] == "a" * 40
    assert account["email_address"] == "me@example.com"
    template = json.loads((EXAMPLES / "AccountGetResponse.json").read_text())["account"]
    assert set(account) == set(template)


@pytest.mark.parametrize(
    ("auth", "headers", "message"),
    [
        (None, {}, "No credentials supplied"),
        (("wrong-key", ""), {}, "Invalid credentials"),
        (("", "test-key"), {}, "Invalid credentials"),
        (None, {"Authorization": "Bearer wrong-token"}, "Invalid credentials"),
        (None, {"Authorization": "Bearer test-key"}, "Invalid credentials"),
        (None, {"Authorization": "Basic not-base64!"}, "Invalid credentials"),
        (None, {"Authorization": "Token test-key"}, "Invalid credentials"),
    ],
    ids=["missing", "wrong-key", "key-as-password", "wrong-token", "key-as-token", "garbage", "scheme"],
)
def test_bad_credentials_answer_401(
    emu: DropboxSignEmulator, auth: Any, headers: dict[str, str], message: str
) -> None:
    request = emu.create_signature_request()
    response = call(
        emu, "GET", f"/signature_request/{request['signature_request_id']}", auth=auth, headers=headers
    )
    error = assert_error(response, 401, "unauthorized")
    assert message in error["error_msg"]
    assert response.headers["X-RateLimit-Limit"] == "100"


@pytest.mark.parametrize(
    ("auth", "headers", "status"),
    [
        (("clé".encode(), b""), {}, 200),
        ((b"clef", b""), {}, 401),
        (("ключ".encode(), b""), {}, 401),
        (None, {"Authorization": "Bearer jéton".encode()}, 200),
        (None, {"Authorization": "Bearer jeton"}, 401),
        (None, {"Authorization": "Bearer tök€n".encode()}, 401),
        # Latin-1 bytes are not UTF-8: aiohttp decodes them into lone surrogates.
        (None, {"Authorization": "Bearer jéton".encode("latin-1")}, 401),
    ],
    ids=["key", "ascii-key", "wrong-key", "token", "ascii-token", "wrong-token", "latin-1-token"],
)
def test_non_ascii_credentials_are_compared_not_crashed_on(
    auth: Any, headers: dict[str, Any], status: int
) -> None:
    with DropboxSignEmulator(api_keys=("clé",), access_tokens=("jéton",)) as emulator:
        response = call(emulator, "GET", "/account", auth=auth, headers=headers)
    if status == 401:
        assert_error(response, 401, "unauthorized")
    else:
        assert response.status_code == status, response.text


def test_unknown_paths_answer_404_envelope(emu: DropboxSignEmulator) -> None:
    for method, path in [
        ("GET", "/nope"),
        ("GET", ""),
        ("DELETE", "/account"),
        ("GET", "/signature_request/a/b"),
    ]:
        assert_error(call(emu, method, path), 404, "not_found")
    assert_error(call(emu, "GET", "/signature_request/unknown-id"), 404, "not_found")
    assert requests.get(f"{emu.url}/v33/account", auth=KEY, timeout=5).status_code == 404


# -- rate limit ------------------------------------------------------------------------------------


def test_rate_limit_headers_429_and_window_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_700_000_000.25)
    monkeypatch.setattr(emulator_module, "time", clock)
    with DropboxSignEmulator(rate_limit=5, window_seconds=1) as emulator:
        assert call(emulator, "GET", "/account", auth=None).headers["X-RateLimit-Remaining"] == "5"
        remaining = []
        for index in range(5):
            headers = {"Authorization": "Bearer test-token"} if index % 2 else {}
            response = call(emulator, "GET", "/account", auth=None if headers else KEY, headers=headers)
            assert response.status_code == 200
            assert response.headers["X-RateLimit-Limit"] == "5"
            assert response.headers["X-Ratelimit-Reset"] == "1700000001"
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        for _ in range(2):
            limited = call(emulator, "GET", "/account")
            assert_error(limited, 429, "exceeded_rate")
            assert limited.headers["X-RateLimit-Remaining"] == "0"
            assert limited.headers["X-Ratelimit-Reset"] == "1700000001"
        clock.now = 1_700_000_001.0
        fresh = call(emulator, "GET", "/account")
        assert fresh.status_code == 200
        assert fresh.headers["X-RateLimit-Remaining"] == "4"
        assert fresh.headers["X-Ratelimit-Reset"] == "1700000002"
        assert [entry.status for entry in emulator.requests_log].count(429) == 2


def test_rate_limit_windows_align_to_the_epoch_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_700_000_007.5)
    monkeypatch.setattr(emulator_module, "time", clock)
    with DropboxSignEmulator(rate_limit=2, window_seconds=5) as emulator:
        assert call(emulator, "GET", "/account").headers["X-Ratelimit-Reset"] == "1700000010"
        clock.now = 1_700_000_009.9
        assert call(emulator, "GET", "/account").headers["X-RateLimit-Remaining"] == "0"
        clock.now = 1_700_000_010.0
        response = call(emulator, "GET", "/account")
        assert response.headers["X-RateLimit-Remaining"] == "1"
        assert response.headers["X-Ratelimit-Reset"] == "1700000015"


def test_rate_limit_resets_in_real_time() -> None:
    with DropboxSignEmulator(rate_limit=3, window_seconds=1) as emulator:
        # Start just after a window boundary so the burst below lands in one window.
        time.sleep(math.ceil(time.time()) - time.time() + 0.02)
        statuses = [call(emulator, "GET", "/account").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        reset = int(call(emulator, "GET", "/account").headers["X-Ratelimit-Reset"])
        assert time.time() < reset <= math.ceil(time.time())
        time.sleep(reset - time.time() + 0.01)
        assert call(emulator, "GET", "/account").status_code == 200


# -- cancellation ----------------------------------------------------------------------------------


def test_cancel_is_asynchronous_then_410(emu: DropboxSignEmulator) -> None:
    request_id = emu.create_signature_request(title="NDA")["signature_request_id"]
    response = call(emu, "POST", f"/signature_request/cancel/{request_id}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {}
    assert emu.get_state(request_id) == "cancel_requested"
    still_there = call(emu, "GET", f"/signature_request/{request_id}")
    assert still_there.status_code == 200
    assert still_there.json()["signature_request"]["signature_request_id"] == request_id
    time.sleep(CANCEL_DELAY + 0.05)
    assert emu.get_state(request_id) == "canceled"
    gone = assert_error(call(emu, "GET", f"/signature_request/{request_id}"), 410, "deleted")
    assert gone["error_msg"] == "This resource has been deleted."
    assert_error(call(emu, "POST", f"/signature_request/cancel/{request_id}"), 410, "deleted")
    listed = call(emu, "GET", "/signature_request/list").json()["signature_requests"]
    assert request_id not in [item["signature_request_id"] for item in listed]
    assert emu.cancel_calls(request_id) == 2
    assert [entry[:3] for entry in emu.requests_log] == [
        ("POST", f"/v3/signature_request/cancel/{request_id}", 200),
        ("GET", f"/v3/signature_request/{request_id}", 200),
        ("GET", f"/v3/signature_request/{request_id}", 410),
        ("POST", f"/v3/signature_request/cancel/{request_id}", 410),
        ("GET", "/v3/signature_request/list", 200),
    ]
    assert all(isinstance(entry, LoggedRequest) for entry in emu.requests_log)
    canceled = next(r for r in emu.signature_requests() if r["signature_request_id"] == request_id)
    assert canceled["state"] == "canceled"


def test_cancel_of_a_cancelled_or_removed_request_answers_410_deleted(emu: DropboxSignEmulator) -> None:
    canceled = emu.create_signature_request()["signature_request_id"]
    removed = emu.create_signature_request(is_complete=True)["signature_request_id"]
    assert call(emu, "POST", f"/signature_request/cancel/{canceled}").status_code == 200
    assert call(emu, "POST", f"/signature_request/remove/{removed}").status_code == 200
    wait_for(lambda: emu.get_state(canceled) == "canceled")
    for request_id in (canceled, canceled, removed):
        error = assert_error(call(emu, "POST", f"/signature_request/cancel/{request_id}"), 410, "deleted")
        assert error["error_msg"] == "This resource has been deleted."
    assert emu.cancel_calls(canceled) == 3


def test_cancel_completes_lazily_on_a_patched_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(time.time())
    monkeypatch.setattr(emulator_module, "time", clock)
    with DropboxSignEmulator(cancel_delay=3600) as emulator:
        request_id = emulator.create_signature_request()["signature_request_id"]
        assert call(emulator, "POST", f"/signature_request/cancel/{request_id}").status_code == 200
        clock.skew = 3599
        assert emulator.get_state(request_id) == "cancel_requested"
        clock.skew = 3601
        assert emulator.get_state(request_id) == "canceled"


def test_cancel_twice_while_queued_keeps_the_first_queue_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # On a patched clock: the answer depends on when each call lands, not on how busy the machine is.
    clock = FakeClock(time.time())
    monkeypatch.setattr(emulator_module, "time", clock)
    with DropboxSignEmulator(cancel_delay=100) as emulator:
        request_id = emulator.create_signature_request()["signature_request_id"]
        assert call(emulator, "POST", f"/signature_request/cancel/{request_id}").status_code == 200
        clock.skew = 75
        second = call(emulator, "POST", f"/signature_request/cancel/{request_id}")
        assert second.status_code == 200
        assert second.json() == {}
        # A restarted queue would complete at 175; the first one completes at 100.
        clock.skew = 120
        assert emulator.get_state(request_id) == "canceled"
        assert emulator.cancel_calls(request_id) == 2


@pytest.mark.parametrize(
    ("fields", "status", "name", "message"),
    [
        ({"is_complete": True}, 400, "bad_request", "already been completed"),
        ({"is_declined": True}, 400, "bad_request", "declined"),
        ({"forbidden": True}, 403, "forbidden", "access"),
    ],
    ids=["completed", "declined", "forbidden"],
)
def test_cancel_ineligible_requests(
    emu: DropboxSignEmulator, fields: dict[str, Any], status: int, name: str, message: str
) -> None:
    request_id = emu.create_signature_request(**fields)["signature_request_id"]
    error = assert_error(call(emu, "POST", f"/signature_request/cancel/{request_id}"), status, name)
    assert message in error["error_msg"]
    time.sleep(CANCEL_DELAY + 0.05)
    assert emu.get_state(request_id) in ("completed", "declined", "awaiting_signature")
    assert emu.cancel_calls(request_id) == 1


def test_cancel_unknown_answers_404_and_is_counted(emu: DropboxSignEmulator) -> None:
    assert_error(call(emu, "POST", "/signature_request/cancel/deadbeef"), 404, "not_found")
    assert emu.cancel_calls("deadbeef") == 1
    assert emu.cancel_calls("never-called") == 0


def test_forbidden_request_is_hidden_everywhere(emu: DropboxSignEmulator) -> None:
    request_id = emu.create_signature_request(forbidden=True)["signature_request_id"]
    assert_error(call(emu, "GET", f"/signature_request/{request_id}"), 403, "forbidden")
    assert_error(call(emu, "POST", f"/signature_request/remove/{request_id}"), 403, "forbidden")
    assert call(emu, "GET", "/signature_request/list").json()["list_info"]["num_results"] == 0
    assert [r["state"] for r in emu.signature_requests()] == ["awaiting_signature"]


def test_remove_completed_and_declined_requests(emu: DropboxSignEmulator) -> None:
    completed = emu.create_signature_request(is_complete=True)["signature_request_id"]
    declined = emu.create_signature_request(is_declined=True)["signature_request_id"]
    pending = emu.create_signature_request()["signature_request_id"]
    for request_id in (completed, declined):
        response = call(emu, "POST", f"/signature_request/remove/{request_id}")
        assert response.status_code == 200
        assert response.json() == {}
        assert_error(call(emu, "GET", f"/signature_request/{request_id}"), 410, "deleted")
        assert_error(call(emu, "POST", f"/signature_request/remove/{request_id}"), 410, "deleted")
    assert emu.get_state(completed) == "completed"
    assert_error(call(emu, "POST", f"/signature_request/remove/{pending}"), 400, "bad_request")
    assert_error(call(emu, "POST", "/signature_request/remove/unknown"), 404, "not_found")
    listed = call(emu, "GET", "/signature_request/list").json()["signature_requests"]
    assert [item["signature_request_id"] for item in listed] == [pending]


# -- list and search -------------------------------------------------------------------------------


def ids_of(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["signature_request_id"] for item in response.json()["signature_requests"]]


def test_list_paginates_newest_first(emu: DropboxSignEmulator) -> None:
    for index in range(5):
        emu.create_signature_request(signature_request_id=f"{index:040x}", created_at=1_600_000_000 + index)
    emu.create_signature_request(signature_request_id="f" * 40, created_at=1_600_000_004)
    expected = [f"{4:040x}", "f" * 40, f"{3:040x}", f"{2:040x}", f"{1:040x}", f"{0:040x}"]
    default = call(emu, "GET", "/signature_request/list")
    assert ids_of(default) == expected
    assert default.json()["list_info"] == {"page": 1, "num_pages": 1, "num_results": 6, "page_size": 20}
    pages = [
        call(emu, "GET", "/signature_request/list", params={"page": n, "page_size": 4}) for n in (1, 2, 3)
    ]
    assert [ids_of(page) for page in pages] == [expected[:4], expected[4:], []]
    assert pages[1].json()["list_info"] == {"page": 2, "num_pages": 2, "num_results": 6, "page_size": 4}
    assert ids_of(call(emu, "GET", "/signature_request/list", params={"page_size": 100}))[:1] == expected[:1]
    assert ids_of(call(emu, "GET", "/signature_request/list", params={"account_id": "all"})) == expected
    assert {entry.path for entry in emu.requests_log} == {"/v3/signature_request/list"}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"page_size": 0}, "0"),
        ({"page_size": 101}, "101"),
        ({"page_size": "ten"}, "ten"),
        ({"page": 0}, "0"),
        ({"page": "-1"}, "-1"),
        ({"account_id": "someone-else"}, "someone-else"),
    ],
)
def test_list_rejects_bad_paging(emu: DropboxSignEmulator, params: dict[str, Any], named: str) -> None:
    error = assert_error(call(emu, "GET", "/signature_request/list", params=params), 400, "bad_request")
    assert named in error["error_msg"]
    assert error["error_path"] == next(iter(params))


@pytest.fixture
def catalogue(emu: DropboxSignEmulator) -> DropboxSignEmulator:
    emu.create_signature_request(
        signature_request_id="a" * 40,
        title="Mutual NDA",
        created_at=day("2024-01-01", 0),
        metadata={"customer": "ACME-42", "tier": "gold"},
    )
    emu.create_signature_request(
        signature_request_id="b" * 40,
        title="nda renewal",
        created_at=day("2024-01-15"),
        is_complete=True,
        metadata={"customer": "Initech"},
    )
    emu.create_signature_request(
        signature_request_id="c" * 40,
        title="Purchase",
        created_at=day("2024-01-31", 23),
        is_declined=True,
        metadata={"order": 42},
    )
    emu.create_signature_request(
        signature_request_id="d" * 40, title="Lease", created_at=day("2024-02-01", 0)
    )
    return emu


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "dcba"),
        ("complete:false", "dca"),
        ("complete:true", "b"),
        ("title:NDA", "ba"),
        ("title:renew", "b"),
        ("metadata:acme", "a"),
        ("metadata:42", "ca"),
        ("metadata:gold AND complete:false", "a"),
        ("created:[2024-01-01 TO 2024-01-31]", "cba"),
        ("created:{2024-01-01 TO 2024-01-31}", "b"),
        ("created:{2024-01-01 TO 2024-02-01}", "cb"),
        ("created:[2024-01-15 TO *]", "dcb"),
        ("created:[* TO 2024-01-14]", "a"),
        ("created:{* TO *}", "dcba"),
        ("title:nda AND complete:false AND created:[2024-01-01 TO 2024-01-01]", "a"),
        ("title:zzz", ""),
        # OR, with AND binding tighter
        ("title:NDA OR title:lease", "dba"),
        ("title:NDA OR title:Signed", "ba"),
        ("title:nda OR title:nda", "ba"),
        ("metadata:42 OR created:[2024-02-01 TO *]", "dca"),
        # AND binds tighter than OR: (complete AND nda) OR lease, not complete AND (nda OR lease).
        ("complete:true AND title:nda OR title:lease", "db"),
        ("title:lease OR complete:true AND metadata:acme", "d"),
        ("title:zzz OR title:yyy", ""),
    ],
)
def test_list_query_forms(catalogue: DropboxSignEmulator, query: str, expected: str) -> None:
    response = call(catalogue, "GET", "/signature_request/list", params={"query": query})
    assert ids_of(response) == [char * 40 for char in expected]
    assert response.json()["list_info"]["num_results"] == len(expected)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("nda*", "nda*"),
        ("title:nda or title:lease", "title:nda or title:lease"),
        ("title:nda Or title:lease", "title:nda Or title:lease"),
        ("title:nda OR ", "title:nda OR "),
        ("OR title:nda", "OR title:nda"),
        ("(title:nda OR title:lease) AND complete:false", "(title:nda"),
        ("title:nd*", "title:nd*"),
        ("title:*da", "title:*da"),
        ('title:"mutual nda"', 'title:"mutual nda"'),
        ("from:", "from:"),
        ("signer:me", "signer:me"),
        ("From:me", "From:me"),
        ("Title:nda", "Title:nda"),
        ("complete:maybe", "complete:maybe"),
        ("complete:false and title:nda", "complete:false and title:nda"),
        ("complete:false AND ", "complete:false AND "),
        ("created:[2024-01-01 TO 2024-13-01]", "2024-13-01"),
        ("created:[2024/01/01 TO *]", "2024/01/01"),
        ("created:[2024-01-01 TO 2024-02-01}", "created:[2024-01-01 TO 2024-02-01}"),
        ("created:2024-01-01", "created:2024-01-01"),
    ],
)
def test_list_rejects_unsupported_queries(catalogue: DropboxSignEmulator, query: str, named: str) -> None:
    response = call(catalogue, "GET", "/signature_request/list", params={"query": query})
    error = assert_error(response, 400, "bad_request")
    assert named in error["error_msg"]
    assert error["error_path"] == "query"


@pytest.fixture
def mailbox(emu: DropboxSignEmulator) -> DropboxSignEmulator:
    """Requests the account sent (a, b) and one it received (r), with the fields searches read."""
    emu.create_signature_request(
        signature_request_id="a" * 40,
        title="Mutual NDA",
        subject="Your NDA",
        message="From the legal team",
        signers=[("Ada Lovelace", "ada@client.example")],
        created_at=day("2024-01-01"),
    )
    emu.create_signature_request(
        signature_request_id="b" * 40,
        title="Lease",
        signers=[("Grace Hopper", "grace@client.example"), ("Me", emu.email)],
        metadata={"unit": "7b"},
        created_at=day("2024-01-02"),
    )
    emu.create_signature_request(
        signature_request_id="r" * 40,
        title="Vendor NDA",
        requester_email_address="contracts@vendor.example",
        signers=[("Me", emu.email.upper())],
        created_at=day("2024-01-03"),
    )
    return emu


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from:me", "ba"),
        ("from:me AND complete:false", "ba"),
        ("from:vendor", "r"),
        ("from:contracts@vendor.example", "r"),
        ("to:me", "rb"),
        ("to:grace", "b"),
        ("to:client.example", "ba"),
        ("subject:your", "a"),
        ("message:legal", "a"),
        # Free terms: the title, the signers, the sender, the subject, the message, the metadata.
        ("nda", "ra"),
        ("hopper", "b"),
        ("vendor", "r"),
        ("7b", "b"),
        ("legal AND from:me", "a"),
        # The fixed terms repeated in each branch keep an OR from reaching a received request.
        ("from:me AND complete:false AND nda OR from:me AND complete:false AND lease", "ba"),
    ],
)
def test_list_searches_the_documented_fields(mailbox: DropboxSignEmulator, query: str, expected: str) -> None:
    response = call(mailbox, "GET", "/signature_request/list", params={"query": query})
    assert ids_of(response) == [char * 40 for char in expected]


def test_a_received_request_is_listed_and_read_but_not_cancelled(mailbox: DropboxSignEmulator) -> None:
    received = "r" * 40
    assert received in ids_of(call(mailbox, "GET", "/signature_request/list"))
    assert call(mailbox, "GET", f"/signature_request/{received}").status_code == 200
    response = call(mailbox, "POST", f"/signature_request/cancel/{received}")
    assert_error(response, 400, "signature_request_cancel_failed")
    assert mailbox.get_state(received) == "awaiting_signature"
    # The sender's own requests still cancel.
    assert call(mailbox, "POST", f"/signature_request/cancel/{'a' * 40}").status_code == 200


def test_an_index_that_ignores_from_lists_received_requests(mailbox: DropboxSignEmulator) -> None:
    mailbox.set_fault(search_ignores=["from"])
    response = call(mailbox, "GET", "/signature_request/list", params={"query": "from:me AND nda"})
    assert ids_of(response) == ["r" * 40, "a" * 40]
    with pytest.raises(ValueError, match="'sender'"):
        mailbox.set_fault(search_ignores=["sender"])


def test_list_skips_canceled_but_keeps_queued(emu: DropboxSignEmulator) -> None:
    queued = emu.create_signature_request(created_at=2)["signature_request_id"]
    canceled = emu.create_signature_request(created_at=1)["signature_request_id"]
    call(emu, "POST", f"/signature_request/cancel/{canceled}")
    time.sleep(CANCEL_DELAY + 0.05)
    call(emu, "POST", f"/signature_request/cancel/{queued}")
    assert ids_of(call(emu, "GET", "/signature_request/list")) == [queued]
    assert {r["signature_request_id"]: r["state"] for r in emu.signature_requests()} == {
        queued: "cancel_requested",
        canceled: "canceled",
    }


# -- faults ----------------------------------------------------------------------------------------


def test_latency_fault_delays_every_call(emu: DropboxSignEmulator) -> None:
    emu.set_fault(latency=0.3)
    started = time.monotonic()
    assert call(emu, "GET", "/account").status_code == 200
    assert time.monotonic() - started >= 0.3
    emu.clear_faults()
    started = time.monotonic()
    call(emu, "GET", "/account")
    assert time.monotonic() - started < 0.3


def test_error_fault_json_500(emu: DropboxSignEmulator) -> None:
    request_id = emu.create_signature_request()["signature_request_id"]
    emu.set_fault(error_rate=1.0, error_statuses=(500,))
    response = call(emu, "POST", f"/signature_request/cancel/{request_id}")
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["error_name"] == "internal_error"
    assert emu.get_state(request_id) == "awaiting_signature"
    assert emu.cancel_calls(request_id) == 0
    assert emu.requests_log[-1].status == 500


@pytest.mark.parametrize("status", [502, 503])
def test_error_fault_gateway_html(emu: DropboxSignEmulator, status: int) -> None:
    emu.set_fault(error_rate=1.0, error_statuses=(status,))
    response = call(emu, "GET", "/account")
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert f"<h1>{status}" in response.text
    assert "X-RateLimit-Limit" not in response.headers


def test_drop_fault_closes_the_connection(emu: DropboxSignEmulator) -> None:
    request_id = emu.create_signature_request()["signature_request_id"]
    emu.set_fault(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        call(emu, "POST", f"/signature_request/cancel/{request_id}")
    arrived = emu.requests_log[0]
    assert emu.requests_log == [
        LoggedRequest(
            "POST", f"/v3/signature_request/cancel/{request_id}", 0, arrived.time, arrived.user_agent
        )
    ]
    # The caller is named: tests tell the workers' client from the triggerer's by it.
    assert arrived.user_agent.startswith("python-requests/")
    assert emu.get_state(request_id) == "awaiting_signature"


def test_malformed_fault_is_not_json_and_does_not_cancel(emu: DropboxSignEmulator) -> None:
    request_id = emu.create_signature_request()["signature_request_id"]
    emu.set_fault(malformed_rate=1.0)
    response = call(emu, "POST", f"/signature_request/cancel/{request_id}")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    time.sleep(CANCEL_DELAY + 0.05)
    assert emu.get_state(request_id) == "awaiting_signature"


def test_rate_limit_storm_ignores_the_budget(emu: DropboxSignEmulator) -> None:
    emu.set_fault(rate_limit_storm=1.0)
    response = call(emu, "GET", "/account")
    assert_error(response, 429, "exceeded_rate")
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert abs(int(response.headers["X-Ratelimit-Reset"]) - (time.time() + 1)) <= 1
    emu.clear_faults()
    after = call(emu, "GET", "/account")
    assert after.status_code == 200
    assert after.headers["X-RateLimit-Remaining"] == "99"


def test_seeded_faults_are_reproducible(emu: DropboxSignEmulator) -> None:
    def run() -> list[int]:
        emu.set_fault(error_rate=0.5, error_statuses=(500, 503), seed=7)
        return [call(emu, "GET", "/account").status_code for _ in range(16)]

    first, second = run(), run()
    assert first == second
    assert {200, 500, 503} <= set(first)


def test_set_fault_validates(emu: DropboxSignEmulator) -> None:
    with pytest.raises(ValueError, match="error_rate must be between 0 and 1"):
        emu.set_fault(error_rate=1.5)
    with pytest.raises(ValueError, match="never_complete"):
        emu.set_fault(never_complete=-1)
    with pytest.raises(ValueError, match="4xx or 5xx"):
        emu.set_fault(error_rate=0.1, error_statuses=(200,))
    assert emu.faults["error_rate"] == 0.0


def test_never_complete_true_keeps_cancellations_pending(emu: DropboxSignEmulator) -> None:
    request_id = emu.create_signature_request()["signature_request_id"]
    emu.set_fault(never_complete=True)
    assert call(emu, "POST", f"/signature_request/cancel/{request_id}").json() == {}
    time.sleep(CANCEL_DELAY + 0.1)
    assert emu.get_state(request_id) == "cancel_requested"
    assert call(emu, "GET", f"/signature_request/{request_id}").status_code == 200
    emu.clear_faults()
    time.sleep(CANCEL_DELAY + 0.05)
    assert emu.get_state(request_id) == "cancel_requested"
    assert call(emu, "POST", f"/signature_request/cancel/{request_id}").status_code == 200
    wait_for(lambda: emu.get_state(request_id) == "canceled")
    assert_error(call(emu, "GET", f"/signature_request/{request_id}"), 410, "deleted")


def test_never_complete_int_loses_the_first_calls(emu: DropboxSignEmulator) -> None:
    request_id = emu.create_signature_request()["signature_request_id"]
    other = emu.create_signature_request()["signature_request_id"]
    emu.set_fault(never_complete=2)
    for _ in range(2):
        assert call(emu, "POST", f"/signature_request/cancel/{request_id}").status_code == 200
        time.sleep(CANCEL_DELAY + 0.05)
        assert emu.get_state(request_id) == "cancel_requested"
    assert call(emu, "POST", f"/signature_request/cancel/{request_id}").status_code == 200
    assert emu.get_state(request_id) == "cancel_requested"
    call(emu, "POST", f"/signature_request/cancel/{other}")
    time.sleep(CANCEL_DELAY + 0.05)
    assert emu.get_state(request_id) == "canceled"
    assert emu.get_state(other) == "cancel_requested"
    assert emu.cancel_calls(request_id) == 3


# -- callbacks -------------------------------------------------------------------------------------


class Receiver:
    """A loopback callback receiver that answers the queued replies, then acknowledges."""

    def __init__(self, replies: list[tuple[int, str]]) -> None:
        self.replies = list(replies)
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.headers["Content-Type"], body))
                status, text = (
                    receiver.replies.pop(0) if receiver.replies else (200, "Hello API Event Received")
                )
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_field(content_type: str, body: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.get_content_type() == "multipart/form-data"
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    assert list(parts) == ["json"]
    return dict(json.loads(parts["json"].get_content()))


def test_callback_is_signed_and_retried_until_acknowledged() -> None:
    with (
        Receiver([(500, "oops"), (200, "OK")]) as receiver,
        DropboxSignEmulator(
            api_keys=("cb-key", "other"), cancel_delay=0.1, callback_url=receiver.url
        ) as emulator,
    ):
        request_id = emulator.create_signature_request(title="NDA")["signature_request_id"]
        started = time.monotonic()
        call(emulator, "POST", f"/signature_request/cancel/{request_id}", auth=("other", ""))
        wait_for(lambda: len(emulator.callback_events) == 1)
        elapsed = time.monotonic() - started
    assert len(receiver.received) == 3
    # Backoff starts at 0.2 s and doubles: 0.2 + 0.4 s between the three attempts.
    assert elapsed >= 0.1 + 0.2 + 0.4
    payloads = [json_field(content_type, body) for content_type, body in receiver.received]
    assert payloads[0] == payloads[2]
    delivered = emulator.callback_events[0]
    assert delivered == payloads[2]
    event = delivered["event"]
    assert event["event_type"] == "signature_request_canceled"
    assert event["event_hash"] == event_hash("cb-key", event["event_time"], "signature_request_canceled")
    assert abs(int(event["event_time"]) - time.time()) < 10
    assert event["event_metadata"] == {
        "related_signature_id": None,
        "reported_for_account_id": emulator.account_id,
        "reported_for_app_id": None,
        "event_message": None,
    }
    assert delivered["signature_request"]["signature_request_id"] == request_id
    assert delivered["signature_request"]["title"] == "NDA"


def test_no_callback_for_lost_cancellations() -> None:
    with (
        Receiver([]) as receiver,
        DropboxSignEmulator(cancel_delay=0.05, callback_url=receiver.url) as emulator,
    ):
        lost = emulator.create_signature_request()["signature_request_id"]
        done = emulator.create_signature_request()["signature_request_id"]
        emulator.set_fault(never_complete=True)
        call(emulator, "POST", f"/signature_request/cancel/{lost}")
        emulator.clear_faults()
        call(emulator, "POST", f"/signature_request/cancel/{done}")
        wait_for(lambda: len(emulator.callback_events) == 1)
        time.sleep(0.3)
    assert [e["signature_request"]["signature_request_id"] for e in emulator.callback_events] == [done]
    assert len(receiver.received) == 1


# -- admin API -------------------------------------------------------------------------------------


def test_admin_api(emu: DropboxSignEmulator) -> None:
    admin = emu.admin_url
    assert requests.get(f"{admin}/health", timeout=5).json() == {"status": "ok"}
    one = requests.post(
        f"{admin}/signature_requests", json={"title": "One", "signers": [["A", "a@x.io"]]}, timeout=5
    )
    assert one.status_code == 200
    assert one.json()["title"] == "One"
    assert one.json()["signatures"][0]["signer_email_address"] == "a@x.io"
    many = requests.post(
        f"{admin}/signature_requests",
        json=[{"title": "Two", "is_complete": True}, {"title": "Three"}],
        timeout=5,
    ).json()
    assert [item["title"] for item in many] == ["Two", "Three"]
    bad = requests.post(f"{admin}/signature_requests", json={"titel": "x"}, timeout=5)
    assert bad.status_code == 400
    assert "titel" in bad.json()["error"]["error_msg"]
    listed = requests.get(f"{admin}/signature_requests", timeout=5).json()
    assert {item["title"]: item["state"] for item in listed} == {
        "One": "awaiting_signature",
        "Two": "completed",
        "Three": "awaiting_signature",
    }
    fetched = call(emu, "GET", f"/signature_request/{one.json()['signature_request_id']}")
    assert fetched.json()["signature_request"] == one.json()

    faults = requests.post(f"{admin}/faults", json={"error_rate": 1, "error_statuses": [500]}, timeout=5)
    assert faults.status_code == 200
    assert faults.json()["error_rate"] == 1.0
    assert call(emu, "GET", "/account").status_code == 500
    assert requests.post(f"{admin}/faults", json={"error_rat": 1}, timeout=5).status_code == 400
    assert requests.post(f"{admin}/faults", json={"drop_rate": 2}, timeout=5).status_code == 400
    assert requests.get(f"{admin}/faults", timeout=5).json()["error_statuses"] == [500]
    assert requests.delete(f"{admin}/faults", timeout=5).json()["error_rate"] == 0.0
    assert call(emu, "GET", "/account").status_code == 200

    entries = requests.get(f"{admin}/requests_log", timeout=5).json()
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("GET", f"/v3/signature_request/{one.json()['signature_request_id']}", 200),
        ("GET", "/v3/account", 500),
        ("GET", "/v3/account", 200),
    ]
    assert all(isinstance(e["time"], float) for e in entries)
    assert requests.delete(f"{admin}/requests_log", timeout=5).status_code == 200
    assert emu.requests_log == []
    assert requests.get(f"{admin}/callback_events", timeout=5).json() == []


def test_admin_api_is_not_rate_limited_nor_logged() -> None:
    with DropboxSignEmulator(rate_limit=1) as emulator:
        emulator.set_fault(drop_rate=1.0)
        for _ in range(5):
            assert requests.get(f"{emulator.admin_url}/health", timeout=5).status_code == 200
        requests.delete(f"{emulator.admin_url}/faults", timeout=5)
        assert call(emulator, "GET", "/account").headers["X-RateLimit-Remaining"] == "0"
        assert [entry.path for entry in emulator.requests_log] == ["/v3/account"]


ADMIN_CALLS = [
    ("GET", "signature_requests", None),
    ("POST", "signature_requests", {"title": "Planted"}),
    ("POST", "bulk_send_jobs", {"count": 2, "title": "Planted by a job"}),
    ("GET", "faults", None),
    ("POST", "faults", {"error_rate": 1}),
    ("DELETE", "faults", None),
    ("GET", "requests_log", None),
    ("DELETE", "requests_log", None),
    ("GET", "callback_events", None),
]


@pytest.mark.parametrize("host", [EVERY_INTERFACE, "::", "", "192.0.2.10", "::ffff:192.0.2.10"])
def test_a_non_loopback_host_is_refused_without_allow_remote(host: str) -> None:
    with pytest.raises(ValueError, match=rf"host {re.escape(repr(host))} is not a loopback.*allow_remote"):
        DropboxSignEmulator(host=host)
    emulator = DropboxSignEmulator()
    # Changed after construction: start() checks again, before binding anything.
    emulator.host = host
    with pytest.raises(ValueError, match=re.escape(repr(host))):
        emulator.start()
    with pytest.raises(RuntimeError):
        _ = emulator.port
    emulator.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    emulator = DropboxSignEmulator(host=host)
    assert emulator.admin_token is None
    assert emulator.allow_remote is False


REMOTE: dict[str, Any] = {"allow_remote": True, "api_keys": ("remote-key",)}


def test_allow_remote_generates_an_admin_token() -> None:
    first = DropboxSignEmulator(host=EVERY_INTERFACE, **REMOTE)
    second = DropboxSignEmulator(host=EVERY_INTERFACE, **REMOTE)
    assert first.admin_token
    assert second.admin_token
    assert len(first.admin_token) >= 32
    assert first.admin_token != second.admin_token
    assert DropboxSignEmulator(host=EVERY_INTERFACE, admin_token="mine", **REMOTE).admin_token == "mine"
    with pytest.raises(ValueError, match="admin_token"):
        DropboxSignEmulator(admin_token="")


@pytest.mark.parametrize(
    "options",
    [REMOTE, {"admin_token": "s3cret-tøken"}],
    ids=["allow-remote", "given-token"],
)
def test_admin_api_requires_the_token_when_one_is_set(options: dict[str, Any]) -> None:
    # Bound to loopback all the same: what is under test is the token, and a test should not open
    # a port to the network.
    with DropboxSignEmulator(**options) as emulator:
        token = emulator.admin_token
        assert token is not None
        admin = emulator.admin_url
        wrong_tokens: list[dict[str, Any]] = [
            {},
            {"X-Emulator-Token": "wrong"},
            {"X-Emulator-Token": "wrøng".encode()},
            {"X-Emulator-Token": token[:-1]},
            {"Authorization": f"Bearer {token}"},
        ]
        for method, path, payload in ADMIN_CALLS:
            for headers in wrong_tokens:
                refused = requests.request(
                    method, f"{admin}/{path}", json=payload, headers=headers, timeout=5
                )
                error = assert_error(refused, 401, "unauthorized")
                assert "X-Emulator-Token" in error["error_msg"]
                assert token not in refused.text
        # Refused calls changed nothing.
        assert emulator.signature_requests() == []
        assert emulator.faults["error_rate"] == 0.0
        assert requests.get(f"{admin}/health", timeout=5).json() == {"status": "ok"}

        good = {"X-Emulator-Token": token.encode()}
        for method, path, payload in ADMIN_CALLS:
            answer = requests.request(method, f"{admin}/{path}", json=payload, headers=good, timeout=5)
            assert answer.status_code == 200, (method, path, answer.text)
        assert [item["title"] for item in emulator.signature_requests()] == ["Planted"] + [
            "Planted by a job"
        ] * 2
        # The API itself still wants an API key, not the admin token.
        assert call(emulator, "GET", "/account", auth=(emulator.api_keys[0], "")).status_code == 200
        assert (
            call(emulator, "GET", "/account", auth=None, headers={"X-Emulator-Token": token}).status_code
            == 401
        )


@pytest.mark.parametrize(
    ("credentials", "named"),
    [
        ({}, "api_keys"),
        ({"api_keys": ()}, "api_keys"),
        ({"api_keys": ("test-key",)}, "'test-key'"),
        ({"api_keys": ("mine", "test-key")}, "'test-key'"),
        ({"api_keys": ("mine",), "access_tokens": ("test-token",)}, "'test-token'"),
        ({"api_keys": ("mine", " ")}, "empty"),
    ],
    ids=["no-keys", "empty-keys", "default-key", "default-key-among-others", "default-token", "blank-key"],
)
def test_allow_remote_refuses_the_default_credentials(credentials: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=rf"allow_remote=True \(--allow-remote\).*{re.escape(named)}"):
        DropboxSignEmulator(allow_remote=True, **credentials)


def test_allow_remote_accepts_only_the_credentials_given() -> None:
    # Bound to loopback: what is under test is which credentials the API takes.
    with DropboxSignEmulator(**REMOTE) as emulator:
        assert emulator.access_tokens == ()
        assert call(emulator, "GET", "/account", auth=("remote-key", "")).status_code == 200
        assert_error(call(emulator, "GET", "/account"), 401, "unauthorized")
        bearer = {"Authorization": "Bearer test-token"}
        assert_error(call(emulator, "GET", "/account", auth=None, headers=bearer), 401, "unauthorized")
    with DropboxSignEmulator(access_tokens=("remote-token",), **REMOTE) as emulator:
        bearer = {"Authorization": "Bearer remote-token"}
        assert call(emulator, "GET", "/account", auth=None, headers=bearer).status_code == 200


# -- command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "stop_signal"),
    [("module", signal.SIGTERM), ("console-script", signal.SIGTERM), ("module", signal.SIGINT)],
    ids=["module-sigterm", "script-sigterm", "module-sigint"],
)
def test_cli_serves_until_stopped(tmp_path: Path, how: str, stop_signal: signal.Signals) -> None:
    script = Path(sys.executable).with_name("dropbox-sign-emulator")
    if how == "console-script" and not script.exists():
        pytest.skip("the console script is not installed in this environment")
    command = [str(script)] if how == "console-script" else [sys.executable, "-m", emulator_module.__name__]
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            *command,
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--api-key",
            "cli-key",
            "--api-key",
            "k2",
            "--rate-limit",
            "7",
            "--high-tier-rate-limit",
            "3",
            "--cancel-delay",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"},
    )
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}/v3"
        response = requests.get(f"{base}/account", auth=("k2", ""), timeout=5)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "7"
        sent = requests.post(
            f"{base}/signature_request/send", files={"x": ("a", b"")}, auth=("k2", ""), timeout=5
        )
        assert (sent.status_code, sent.headers["X-RateLimit-Limit"]) == (400, "3")
        assert requests.get(f"{base}/account", auth=("test-key", ""), timeout=5).status_code == 401
        created = requests.post(
            f"http://127.0.0.1:{port}/_emulator/signature_requests", json={}, timeout=5
        ).json()
        request_id = created["signature_request_id"]
        assert requests.post(
            f"{base}/signature_request/cancel/{request_id}", auth=("cli-key", ""), timeout=5
        ).ok
        time.sleep(0.2)
        assert (
            requests.get(
                f"{base}/signature_request/{request_id}", auth=("cli-key", ""), timeout=5
            ).status_code
            == 410
        )
    finally:
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert stdout.strip() == f"Dropbox Sign emulator serving http://127.0.0.1:{port}/v3"
    assert "Traceback" not in stderr


def run_cli(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", emulator_module.__name__, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("host", [EVERY_INTERFACE, "::"])
def test_cli_refuses_a_non_loopback_host_without_allow_remote(host: str) -> None:
    process = run_cli("--host", host, "--port", "0", "--api-key", "sk-live-do-not-print")
    try:
        stdout, stderr = process.communicate(timeout=30)
    finally:
        # An emulator that wrongly serves must not outlive the test.
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 2
    assert f"host {host!r} is not a loopback address" in stderr
    assert "--allow-remote" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    assert "sk-live-do-not-print" not in stderr


def test_cli_allow_remote_writes_the_token_next_to_the_port_file(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    token_file = tmp_path / "port.admin-token"
    # --allow-remote on loopback: the token mechanics are the same, and no port opens to the network.
    process = run_cli(
        "--allow-remote", "--port", "0", "--port-file", str(port_file), "--api-key", "sk-secret"
    )
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Written before the port file, so a script that waits for the port finds the token too.
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o077 == 0
        admin = f"http://127.0.0.1:{int(port_file.read_text())}/_emulator"
        assert requests.get(f"{admin}/health", timeout=5).status_code == 200
        assert requests.get(f"{admin}/faults", timeout=5).status_code == 401
        assert (
            requests.get(f"{admin}/faults", headers={"X-Emulator-Token": token}, timeout=5).status_code == 200
        )
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert str(token_file) in stderr
    assert token not in stdout + stderr
    assert "sk-secret" not in stdout + stderr


def test_cli_allow_remote_without_port_file_prints_the_token_once_to_stderr() -> None:
    process = run_cli("--allow-remote", "--port", "0", "--api-key", "sk-remote")
    try:
        assert process.stderr is not None
        assert process.stdout is not None
        announced = process.stderr.readline()
        serving = process.stdout.readline()
        match = re.fullmatch(
            r"Admin API token is (\S+): send it in the X-Emulator-Token header\.\n", announced
        )
        assert match, announced
        admin = (
            serving.strip().removeprefix("Dropbox Sign emulator serving ").removesuffix("/v3") + "/_emulator"
        )
        headers = {"X-Emulator-Token": match.group(1)}
        assert requests.get(f"{admin}/requests_log", headers=headers, timeout=5).json() == []
        assert requests.get(f"{admin}/requests_log", timeout=5).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert match.group(1) not in stdout + stderr


@pytest.mark.parametrize(
    "credentials",
    [[], ["--api-key", "test-key"], ["--api-key", "sk-mine", "--access-token", "test-token"]],
    ids=["no-key", "default-key", "default-token"],
)
def test_cli_allow_remote_without_a_key_of_ones_own_refuses_to_start(credentials: list[str]) -> None:
    # On loopback: should the check be missing, the emulator would serve, and only on loopback.
    process = run_cli("--allow-remote", "--port", "0", *credentials)
    try:
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"the emulator started with --allow-remote {credentials}: {stdout!r}")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 2, stderr
    assert "--allow-remote" in stderr
    assert "--api-key" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""


def test_cli_main_rejects_unknown_flags() -> None:
    with pytest.raises(SystemExit) as exit_info:
        emulator_module.main(["--no-such-flag"])
    assert exit_info.value.code == 2


# --- odd answers ------------------------------------------------------------------------------


def test_an_odd_answer_is_served_once_to_the_matching_call_and_logged() -> None:
    with DropboxSignEmulator(api_keys=("k",)) as emu:
        sr_id = emu.create_signature_request()["signature_request_id"]
        emu.add_odd_answers(
            OddAnswer(302, {"Location": f"{emu.url}/v3/account"}, method="POST"),
            OddAnswer(headers={"X-Ratelimit-Reset": "1794244889475", "X-RateLimit-Limit": None}),
        )
        auth = ("k", "")
        get = requests.get(f"{emu.base_url}/signature_request/{sr_id}", auth=auth, timeout=5)
        assert get.status_code == 200
        assert get.headers["X-Ratelimit-Reset"] == "1794244889475"
        assert "X-RateLimit-Limit" not in get.headers
        cancel = requests.post(
            f"{emu.base_url}/signature_request/cancel/{sr_id}", auth=auth, timeout=5, allow_redirects=False
        )
        assert cancel.status_code == 302
        assert cancel.headers["Location"] == f"{emu.url}/v3/account"
        # The odd answer acted for nothing: the request is untouched, the next cancel is real.
        assert emu.get_state(sr_id) == "awaiting_signature"
        again = requests.post(f"{emu.base_url}/signature_request/cancel/{sr_id}", auth=auth, timeout=5)
        assert again.status_code == 200
        calls = [(r.method, r.status) for r in emu.requests_log]
        assert calls == [("GET", 200), ("POST", 302), ("POST", 200)]


def test_odd_answers_refuse_a_nonsense_count_or_status() -> None:
    emu = DropboxSignEmulator()
    with pytest.raises(ValueError, match="times 0"):
        emu.add_odd_answers(OddAnswer(500, times=0))
    with pytest.raises(ValueError, match="status 42"):
        emu.add_odd_answers(OddAnswer(42))
