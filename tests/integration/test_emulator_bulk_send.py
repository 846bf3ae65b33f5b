"""The emulator's bulk send jobs: seeding them, the two calls that list them, and their requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import API_KEY, Receiver, make_bulk_send_job, make_requests

KEY = (API_KEY, "")
JOB_ID = "6e683bc0369ba3d5b6f43c2c22a8031dbf6bd174"


def call(emulator: DropboxSignEmulator, path: str, auth: Any = KEY, **params: Any) -> requests.Response:
    return requests.get(emulator.base_url + path, params=params, auth=auth, timeout=10)


def listed(response: requests.Response, member: str = "signature_requests") -> list[str]:
    assert response.status_code == 200, response.text
    key = "bulk_send_job_id" if member == "bulk_send_jobs" else "signature_request_id"
    return [item[key] for item in response.json()[member]]


def error_of(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


# --- seeding ---------------------------------------------------------------------------------------


def test_a_seeded_job_sent_ordinary_requests_that_carry_its_id(emulator: DropboxSignEmulator) -> None:
    before = int(time.time())
    job = emulator.create_bulk_send_job(3, title="NDA", metadata={"batch": "7"})
    summary = job["bulk_send_job"]
    assert set(summary) == {"bulk_send_job_id", "total", "is_creator", "created_at"}
    assert (summary["total"], summary["is_creator"]) == (3, True)
    assert before <= summary["created_at"] <= int(time.time())
    job_id = summary["bulk_send_job_id"]
    assert len(job_id) == 40
    assert int(job_id, 16) >= 0
    requests_of_job = job["signature_requests"]
    assert len({sr["signature_request_id"] for sr in requests_of_job}) == 3
    for sr in requests_of_job:
        assert sr["bulk_send_job_id"] == job_id
        assert (sr["title"], sr["metadata"], sr["created_at"]) == (
            "NDA",
            {"batch": "7"},
            summary["created_at"],
        )
        assert emulator.get_state(sr["signature_request_id"]) == "awaiting_signature"
        got = call(emulator, f"/signature_request/{sr['signature_request_id']}")
        assert got.json() == {"signature_request": sr}
    # A request sent on its own carries no job id, as in Dropbox Sign's example of one.
    assert "bulk_send_job_id" not in emulator.create_signature_request()


def test_a_job_takes_its_id_and_created_at(emulator: DropboxSignEmulator) -> None:
    job = emulator.create_bulk_send_job(2, bulk_send_job_id=JOB_ID, created_at=1_600_000_000)
    assert job["bulk_send_job"] == {
        "bulk_send_job_id": JOB_ID,
        "total": 2,
        "is_creator": True,
        "created_at": 1_600_000_000,
    }
    assert {sr["created_at"] for sr in job["signature_requests"]} == {1_600_000_000}


@pytest.mark.parametrize(
    ("count", "fields", "error", "named"),
    [
        (0, {}, ValueError, "count 0"),
        (251, {}, ValueError, "count 251"),
        (True, {}, ValueError, "count True"),
        ("3", {}, ValueError, "count '3'"),
        (2, {"signature_request_id": "a" * 40}, TypeError, "signature_request_id"),
        (2, {"forbidden": True}, TypeError, "forbidden"),
        (2, {"titel": "typo"}, TypeError, "titel"),
        (2, {"is_complete": True, "is_declined": True}, ValueError, "both complete and declined"),
        (2, {"bulk_send_job_id": "a/b"}, ValueError, "'a/b'"),
    ],
)
def test_a_bad_job_is_refused_and_nothing_is_stored(
    emulator: DropboxSignEmulator, count: Any, fields: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        emulator.create_bulk_send_job(count, **fields)
    assert emulator.signature_requests() == []
    assert listed(call(emulator, "/bulk_send_job/list"), "bulk_send_jobs") == []


def test_a_job_id_is_used_once(emulator: DropboxSignEmulator) -> None:
    emulator.create_bulk_send_job(1, bulk_send_job_id=JOB_ID)
    with pytest.raises(ValueError, match="already exists"):
        emulator.create_bulk_send_job(1, bulk_send_job_id=JOB_ID)
    assert len(emulator.signature_requests()) == 1


def test_the_admin_api_seeds_a_job(emulator: DropboxSignEmulator) -> None:
    url = f"{emulator.admin_url}/bulk_send_jobs"
    made = requests.post(url, json={"count": 3, "bulk_send_job_id": JOB_ID, "title": "Lease"}, timeout=5)
    assert made.status_code == 200, made.text
    assert made.json()["bulk_send_job"]["total"] == 3
    assert [sr["title"] for sr in made.json()["signature_requests"]] == ["Lease"] * 3
    assert listed(call(emulator, f"/bulk_send_job/{JOB_ID}")) == [
        sr["signature_request_id"] for sr in made.json()["signature_requests"]
    ]
    for payload, named in [
        ({}, "count"),
        ({"count": 251}, "251"),
        ({"count": 1, "titel": "x"}, "titel"),
        ({"count": 1, "bulk_send_job_id": JOB_ID}, "already exists"),
        ([{"count": 1}], "JSON object"),
    ]:
        refused = requests.post(url, json=payload, timeout=5)
        assert named in error_of(refused, 400)["error_msg"]
    assert len(emulator.signature_requests()) == 3


# --- GET /bulk_send_job/{bulk_send_job_id} ---------------------------------------------------------


def test_a_job_lists_its_requests_in_pages_in_the_order_sent(emulator: DropboxSignEmulator) -> None:
    job_id, ids = make_bulk_send_job(emulator, 250)
    make_requests(emulator, 2)  # not the job's
    make_bulk_send_job(emulator, 3)  # another job's
    pages = [call(emulator, f"/bulk_send_job/{job_id}", page=n, page_size=100) for n in (1, 2, 3, 4)]
    assert [listed(page) for page in pages] == [ids[:100], ids[100:200], ids[200:], []]
    assert [page.json()["list_info"] for page in pages[1:]] == [
        {"page": n, "num_pages": 3, "num_results": 250, "page_size": 100} for n in (2, 3, 4)
    ]
    assert all(page.json()["bulk_send_job"]["total"] == 250 for page in pages)
    default = call(emulator, f"/bulk_send_job/{job_id}")
    assert listed(default) == ids[:20]
    assert default.json()["list_info"] == {"page": 1, "num_pages": 13, "num_results": 250, "page_size": 20}


def test_cancelled_requests_leave_the_job_list_but_not_its_total(emulator: DropboxSignEmulator) -> None:
    job_id, (canceled, queued, *rest) = make_bulk_send_job(emulator, 4)
    for sr_id in (canceled, queued):
        cancel = requests.post(f"{emulator.base_url}/signature_request/cancel/{sr_id}", auth=KEY, timeout=10)
        assert cancel.status_code == 200
        if sr_id == canceled:
            time.sleep(0.25)  # past the emulator's cancel_delay
    answer = call(emulator, f"/bulk_send_job/{job_id}")
    assert listed(answer) == [queued, *rest]
    assert answer.json()["list_info"]["num_results"] == 3
    assert answer.json()["bulk_send_job"]["total"] == 4
    assert emulator.get_state(canceled) == "canceled"
    assert emulator.get_state(queued) == "cancel_requested"


def test_a_jobs_requests_are_in_the_signature_request_list(emulator: DropboxSignEmulator) -> None:
    _, ids = make_bulk_send_job(emulator, 3, title="Offer")
    alone = make_requests(emulator, 1, title="NDA")
    assert sorted(listed(call(emulator, "/signature_request/list"))) == sorted(ids + alone)
    assert sorted(listed(call(emulator, "/signature_request/list", query="title:offer"))) == sorted(ids)


def test_a_jobs_requests_report_events_with_the_job_id(
    make_emulator: Callable[..., DropboxSignEmulator], receiver: Receiver
) -> None:
    emulator = make_emulator(callback_url=receiver.url, cancel_delay=0.05)
    job_id, (signed, canceled) = make_bulk_send_job(emulator, 2)
    emulator.sign(signed)
    requests.post(f"{emulator.base_url}/signature_request/cancel/{canceled}", auth=KEY, timeout=10)
    events = [received.payload() for received in receiver.wait_for(4)]
    assert {e["event"]["event_type"]: e["signature_request"]["signature_request_id"] for e in events} == {
        "signature_request_signed": signed,
        "signature_request_all_signed": signed,
        "signature_request_downloadable": signed,
        "signature_request_canceled": canceled,
    }
    assert {e["signature_request"]["bulk_send_job_id"] for e in events} == {job_id}


def test_an_unknown_job_answers_404_not_found(emulator: DropboxSignEmulator) -> None:
    make_bulk_send_job(emulator, 1)
    for job_id in (JOB_ID, "not-an-id"):
        error = error_of(call(emulator, f"/bulk_send_job/{job_id}"), 404)
        assert error == {"error_msg": "Not found.", "error_name": "not_found"}


@pytest.mark.parametrize(
    "path", ["/signature_request/list", "/bulk_send_job/list", f"/bulk_send_job/{JOB_ID}"]
)
@pytest.mark.parametrize(
    ("params", "named"),
    [({"page_size": 0}, "0"), ({"page_size": 101}, "101"), ({"page_size": "ten"}, "ten"), ({"page": 0}, "0")],
)
def test_every_list_refuses_bad_paging_alike(
    emulator: DropboxSignEmulator, path: str, params: dict[str, Any], named: str
) -> None:
    emulator.create_bulk_send_job(1, bulk_send_job_id=JOB_ID)
    error = error_of(call(emulator, path, **params), 400)
    assert error["error_name"] == "bad_request"
    assert named in error["error_msg"]
    assert error["error_path"] == next(iter(params))


# --- GET /bulk_send_job/list -----------------------------------------------------------------------


def test_jobs_are_listed_newest_first_in_pages(emulator: DropboxSignEmulator) -> None:
    jobs = [
        emulator.create_bulk_send_job(n, bulk_send_job_id=f"{n:040x}", created_at=1_600_000_000 + n)
        for n in (1, 2, 3)
    ]
    newest_first = [job["bulk_send_job"] for job in reversed(jobs)]
    everything = call(emulator, "/bulk_send_job/list")
    assert everything.json() == {
        "bulk_send_jobs": newest_first,
        "list_info": {"page": 1, "num_pages": 1, "num_results": 3, "page_size": 20},
    }
    second = call(emulator, "/bulk_send_job/list", page=2, page_size=2)
    assert second.json()["bulk_send_jobs"] == newest_first[2:]
    assert second.json()["list_info"] == {"page": 2, "num_pages": 2, "num_results": 3, "page_size": 2}


def test_no_job_is_an_empty_list(emulator: DropboxSignEmulator) -> None:
    assert call(emulator, "/bulk_send_job/list").json() == {
        "bulk_send_jobs": [],
        "list_info": {"page": 1, "num_pages": 0, "num_results": 0, "page_size": 20},
    }


# --- authentication, rate limit, log ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/bulk_send_job/list", f"/bulk_send_job/{JOB_ID}"])
def test_the_job_calls_want_credentials(emulator: DropboxSignEmulator, path: str) -> None:
    emulator.create_bulk_send_job(1, bulk_send_job_id=JOB_ID)
    assert error_of(call(emulator, path, auth=None), 401)["error_name"] == "unauthorized"
    assert error_of(call(emulator, path, auth=("wrong", "")), 401)["error_name"] == "unauthorized"
    assert [(e.path, e.status) for e in emulator.requests_log] == [(f"/v3{path}", 401)] * 2


@pytest.mark.emulator(rate_limit=2)
def test_the_job_calls_spend_the_accounts_rate_limit(emulator: DropboxSignEmulator) -> None:
    emulator.create_bulk_send_job(1, bulk_send_job_id=JOB_ID)
    first = call(emulator, "/bulk_send_job/list")
    second = call(emulator, f"/bulk_send_job/{JOB_ID}")
    assert [first.headers["X-RateLimit-Remaining"], second.headers["X-RateLimit-Remaining"]] == ["1", "0"]
    limited = call(emulator, "/bulk_send_job/list")
    assert error_of(limited, 429)["error_name"] == "exceeded_rate"
    assert "X-Ratelimit-Reset" in limited.headers
    assert [(e.method, e.path, e.status) for e in emulator.requests_log] == [
        ("GET", "/v3/bulk_send_job/list", 200),
        ("GET", f"/v3/bulk_send_job/{JOB_ID}", 200),
        ("GET", "/v3/bulk_send_job/list", 429),
    ]
