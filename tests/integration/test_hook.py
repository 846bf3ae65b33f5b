"""
DropboxSignHook against the bundled emulator over loopback: what only the sync hook does (the
connection's finer checks, test_connection, remove, pagination, bulk send jobs, its budget and
retries, interrupted calls). What both hooks share is in test_both_hooks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowTaskTimeout

from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignDeletedError,
    DropboxSignNotFoundError,
    DropboxSignRateLimitError,
    DropboxSignResponseError,
    DropboxSignServerError,
)
from dropbox_sign_provider.hooks.budget import account_budget
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator, OddAnswer
from tests.helpers import (
    BAD_IDS,
    FAST,
    SECRET_ACCESS_TOKEN,
    SECRET_API_KEY,
    SECRETS,
    UNKNOWN_ID,
    connection_uri_json,
    make_bulk_send_job,
    make_requests,
    set_connection,
    statuses,
)

pytestmark = pytest.mark.emulator(api_keys=(SECRET_API_KEY,), access_tokens=(SECRET_ACCESS_TOKEN,))


# --- authentication and the connection ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        pytest.param(None, None, "https://api.hellosign.com/v3", id="default"),
        pytest.param("api.hellosign.com", None, "https://api.hellosign.com/v3", id="bare-host"),
        pytest.param("https://api.hellosign.com/v3/", None, "https://api.hellosign.com/v3", id="with-v3"),
        pytest.param("http://127.0.0.1", 8080, "http://127.0.0.1:8080/v3", id="port-field"),
        pytest.param("http://[::1]", 8080, "http://[::1]:8080/v3", id="ipv6-port-field"),
        pytest.param("http://localhost:1234/v3", None, "http://localhost:1234/v3", id="localhost"),
        pytest.param("https://eu.example.com:8443", None, "https://eu.example.com:8443/v3", id="https-port"),
    ],
)
def test_the_host_becomes_the_base_url(
    monkeypatch: pytest.MonkeyPatch, host: str | None, port: int | None, expected: str
) -> None:
    fields: dict[str, Any] = {"password": SECRET_API_KEY}
    if host is not None:
        fields["host"] = host
    if port is not None:
        fields["port"] = port
    conn_id = set_connection(monkeypatch, "ds_host", **fields)
    assert DropboxSignHook(conn_id).settings.base_url == expected


def plain_http_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, flag: object) -> str:
    """A connection to a remote host over plain http://, its ``allow_insecure_http`` set to ``flag``."""
    return set_connection(
        monkeypatch,
        conn_id,
        host="http://api.example.com",
        password=SECRET_API_KEY,
        extra={"allow_insecure_http": flag},
    )


@pytest.mark.parametrize("flag", [True, "true", "True", "1", "yes"])
def test_plain_http_is_allowed_when_the_connection_says_so(
    monkeypatch: pytest.MonkeyPatch, flag: object
) -> None:
    conn_id = plain_http_connection(monkeypatch, "ds_insecure_ok", flag)
    assert DropboxSignHook(conn_id).settings.base_url == "http://api.example.com/v3"


@pytest.mark.parametrize("flag", [False, "false", "no", "0"])
def test_plain_http_stays_refused_when_the_flag_is_false(
    monkeypatch: pytest.MonkeyPatch, flag: object
) -> None:
    conn_id = plain_http_connection(monkeypatch, "ds_insecure_no", flag)
    with pytest.raises(ValueError, match="plain http://"):
        DropboxSignHook(conn_id).settings  # noqa: B018


@pytest.mark.parametrize(
    "host",
    [
        "ftp://api.hellosign.com",
        "http://",
        "https://api.hellosign.com:99999",
        "https://api.hellosign.com:port",
        "http://[::1",
        "api hellosign com",
        "https://api.hellosign.com/v3?page=2",
        "https://api.hellosign.com/#v3",
        "https://api.hellosign.com\n/v3",
    ],
)
def test_a_malformed_host_is_refused_with_the_connection_named(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    conn_id = set_connection(monkeypatch, "ds_bad_host", host=host, password=SECRET_API_KEY)
    with pytest.raises(ValueError, match="is not an http") as raised:
        DropboxSignHook(conn_id).settings  # noqa: B018
    assert "'ds_bad_host'" in str(raised.value)


def test_a_password_typed_into_the_host_is_refused_without_being_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn_id = set_connection(
        monkeypatch,
        "ds_userinfo",
        host=f"https://{SECRET_API_KEY}:@api.hellosign.com",
        password=SECRET_API_KEY,
    )
    with pytest.raises(ValueError, match="is not an http") as raised:
        DropboxSignHook(conn_id).settings  # noqa: B018
    assert "'ds_userinfo'" in str(raised.value)
    assert not any(secret in str(raised.value) for secret in SECRETS)


@pytest.mark.parametrize("separator", ["/", "@", ":", "#"])
@pytest.mark.parametrize("scheme", ["https://", ""])
def test_a_password_holding_url_punctuation_is_never_repeated(
    monkeypatch: pytest.MonkeyPatch, separator: str, scheme: str
) -> None:
    host = f"{scheme}admin:HUNTER{separator}TWO@api.hellosign.com"
    conn_id = set_connection(monkeypatch, "ds_userinfo_punct", host=host, password=SECRET_API_KEY)
    with pytest.raises(ValueError, match="is not an http") as raised:
        DropboxSignHook(conn_id).settings  # noqa: B018
    message = str(raised.value)
    assert f"'{scheme}***@api.hellosign.com'" in message
    for part in ("admin", "HUNTER", "TWO"):
        assert part not in message


@pytest.mark.parametrize("hostname", ["a" * 64 + ".example.com", "api..hellosign.com"])
def test_a_host_name_the_http_clients_cannot_encode_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch, hostname: str
) -> None:
    # Both clients would fail with errors of their own (urllib3's LocationParseError, a UnicodeError).
    conn_id = set_connection(monkeypatch, "ds_bad_label", host=f"https://{hostname}", password=SECRET_API_KEY)
    with pytest.raises(ValueError, match="is not an http"):
        DropboxSignHook(conn_id).get_account()
    with pytest.raises(ValueError, match="is not an http"):
        asyncio.run(DropboxSignAsyncHook(conn_id).get_settings())


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"timeout": 0}, "timeout 0"),
        ({"timeout": "-1"}, "timeout '-1'"),
        ({"timeout": "soon"}, "timeout 'soon'"),
        ({"timeout": "nan"}, "timeout 'nan'"),
        ({"timeout": "inf"}, "timeout 'inf'"),
        ({"max_requests_per_minute": 0}, "max_requests_per_minute 0"),
    ],
)
def test_numbers_in_the_extra_must_be_positive(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], named: str
) -> None:
    conn_id = set_connection(
        monkeypatch, "ds_numbers", host="https://api.hellosign.com", password=SECRET_API_KEY, extra=extra
    )
    with pytest.raises(ValueError, match=named) as raised:
        DropboxSignHook(conn_id).settings  # noqa: B018
    assert "'ds_numbers'" in str(raised.value)


def test_settings_never_show_the_credential(key_conn: str) -> None:
    settings = DropboxSignHook(key_conn).settings
    assert not any(secret in repr(settings) for secret in SECRETS)


def test_hooks_of_one_account_share_one_budget(
    emulator: DropboxSignEmulator, key_conn: str, token_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    budget = account_budget(DropboxSignHook(key_conn).settings)
    same_key = set_connection(monkeypatch, "ds_key_again", host=emulator.url, password=SECRET_API_KEY)
    assert account_budget(DropboxSignHook(key_conn).settings) is budget
    assert account_budget(DropboxSignHook(same_key).settings) is budget
    assert account_budget(asyncio.run(DropboxSignAsyncHook(key_conn).get_settings())) is budget
    assert account_budget(DropboxSignHook(token_conn).settings) is not budget


# --- test_connection ---------------------------------------------------------------------------


def test_test_connection_reports_the_account(emulator: DropboxSignEmulator, key_conn: str) -> None:
    assert DropboxSignHook(key_conn).test_connection() == (
        True,
        f"Connected to Dropbox Sign account {emulator.email}",
    )


def test_test_connection_reports_refused_credentials(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = set_connection(monkeypatch, "ds_bad_key", host=emulator.base_url, password="sk-live-WRONG")
    ok, message = DropboxSignHook(conn_id).test_connection()
    assert not ok
    assert "HTTP 401 unauthorized" in message
    assert "WRONG" not in message


def test_test_connection_reports_a_misconfigured_connection(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = set_connection(monkeypatch, "ds_no_creds", host=emulator.base_url)
    ok, message = DropboxSignHook(conn_id).test_connection()
    assert not ok
    assert message.startswith("This connection has no credentials")
    assert emulator.requests_log == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"password": "k", "extra": {"access_token": "t"}}, "has both an API key"),
        ({"password": "k", "host": "ftp://x"}, "has host 'ftp://x'"),
        ({"password": "k", "host": "http://sign.example.com"}, "uses plain http://"),
        ({"password": "k", "extra": {"timeout": "soon"}}, "has timeout 'soon'"),
        ({"password": "k", "extra": {"max_requests_per_minute": 0.5}}, "has max_requests_per_minute 0.5"),
    ],
    ids=["both-credentials", "host", "plain-http", "timeout", "cap"],
)
def test_the_test_button_names_no_temporary_connection_id(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], problem: str
) -> None:
    # The UI tests a form under a random id, which means nothing to whoever reads the message; a
    # task's error keeps naming its connection.
    conn_id = set_connection(monkeypatch, "SWJkFRdF", **fields)
    ok, message = DropboxSignHook(conn_id).test_connection()
    assert not ok
    assert message.startswith(f"This connection {problem}")
    assert "SWJkFRdF" not in message
    with pytest.raises(ValueError, match=f"^Connection 'SWJkFRdF' {re.escape(problem)}"):
        DropboxSignHook(conn_id).get_conn()


# --- get, cancel, remove ---------------------------------------------------------------------------


def test_get_answers_the_signature_request(emulator: DropboxSignEmulator, key_conn: str) -> None:
    created = emulator.create_signature_request(title="NDA", metadata={"team": "legal"})
    got = DropboxSignHook(key_conn).get_signature_request(created["signature_request_id"])
    assert got == created
    assert [(e.method, e.path) for e in emulator.requests_log] == [
        ("GET", f"/v3/signature_request/{created['signature_request_id']}")
    ]


def test_remove_ends_access_to_a_completed_request(emulator: DropboxSignEmulator, key_conn: str) -> None:
    sr_id = make_requests(emulator, 1, is_complete=True)[0]
    hook = DropboxSignHook(key_conn)
    assert hook.remove_signature_request_access(sr_id) is None
    with pytest.raises(DropboxSignDeletedError):
        hook.get_signature_request(sr_id)
    assert emulator.get_state(sr_id) == "completed"
    assert [(e.method, e.path, e.status) for e in emulator.requests_log] == [
        ("POST", f"/v3/signature_request/remove/{sr_id}", 200),
        ("GET", f"/v3/signature_request/{sr_id}", 410),
    ]


# --- every error, typed --------------------------------------------------------------------------


def test_a_bad_parameter_is_named_in_the_error(emulator: DropboxSignEmulator, key_conn: str) -> None:
    with pytest.raises(DropboxSignBadRequestError) as raised:
        list(DropboxSignHook(key_conn).list_signature_requests(account_id="someone-else"))
    error = raised.value
    assert (error.error_name, error.error_path, error.method, error.path) == (
        "bad_request",
        "account_id",
        "GET",
        "/signature_request/list",
    )
    assert "[parameter: account_id]" in str(error)


def test_remove_of_an_incomplete_request_is_a_bad_request(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    with pytest.raises(DropboxSignBadRequestError) as raised:
        DropboxSignHook(key_conn).remove_signature_request_access(sr_id)
    assert raised.value.path == f"/signature_request/remove/{sr_id}"
    assert emulator.get_state(sr_id) == "awaiting_signature"


# --- list ----------------------------------------------------------------------------------------


def test_list_fetches_every_page_lazily(emulator: DropboxSignEmulator, key_conn: str) -> None:
    created = make_requests(emulator, 9)
    pages = DropboxSignHook(key_conn).list_signature_requests(page_size=4)
    assert emulator.requests_log == []  # nothing is fetched before it is asked for

    first = [next(pages) for _ in range(4)]
    assert len(emulator.requests_log) == 1
    rest = list(pages)

    listed = [sr["signature_request_id"] for sr in first + rest]
    assert sorted(listed) == sorted(created)
    assert len(listed) == len(set(listed))
    assert [(e.method, e.path, e.status) for e in emulator.requests_log] == [
        ("GET", "/v3/signature_request/list", 200)
    ] * 3


def test_list_stops_after_an_exactly_full_last_page(emulator: DropboxSignEmulator, key_conn: str) -> None:
    created = make_requests(emulator, 6)
    listed = list(DropboxSignHook(key_conn).list_signature_requests(page_size=3))
    assert sorted(sr["signature_request_id"] for sr in listed) == sorted(created)
    assert len(emulator.requests_log) == 2


def test_list_sends_the_query(emulator: DropboxSignEmulator, key_conn: str) -> None:
    ndas = make_requests(emulator, 2, title="NDA 2024")
    make_requests(emulator, 3, title="Offer letter")
    make_requests(emulator, 1, title="NDA signed", is_complete=True)
    listed = DropboxSignHook(key_conn).list_signature_requests(query="title:NDA AND complete:false")
    assert sorted(sr["signature_request_id"] for sr in listed) == sorted(ndas)


def test_an_empty_list_costs_one_call(emulator: DropboxSignEmulator, key_conn: str) -> None:
    assert list(DropboxSignHook(key_conn).list_signature_requests(query="title:nothing")) == []
    assert len(emulator.requests_log) == 1


def test_one_page_is_one_call_and_says_how_many_pages_there_are(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    created = make_requests(emulator, 7, title="NDA 2024")
    make_requests(emulator, 2, title="Offer letter")
    hook = DropboxSignHook(key_conn)
    first, num_pages = hook.list_signature_requests_page("title:NDA", page=1, page_size=4)
    last, again = hook.list_signature_requests_page("title:NDA", page=2, page_size=4)
    assert (len(first), len(last), num_pages, again) == (4, 3, 2, 2)
    assert sorted(sr["signature_request_id"] for sr in first + last) == sorted(created)
    assert len(emulator.requests_log) == 2


@pytest.mark.parametrize("page", [0, -1, 1.5, "2", True])
def test_a_bad_page_fails_before_any_call(emulator: DropboxSignEmulator, key_conn: str, page: Any) -> None:
    with pytest.raises(ValueError, match=f"page {page!r}"):
        DropboxSignHook(key_conn).list_signature_requests_page(page=page)
    assert emulator.requests_log == []


@pytest.mark.parametrize("page_size", [0, -1, 101, 2.5, "10", None, True])
def test_a_bad_page_size_fails_before_any_call(
    emulator: DropboxSignEmulator, key_conn: str, page_size: Any
) -> None:
    with pytest.raises(ValueError, match=f"page_size {page_size!r}"):
        DropboxSignHook(key_conn).list_signature_requests(page_size=page_size)
    assert emulator.requests_log == []


# --- bulk send jobs --------------------------------------------------------------------------------


def test_a_jobs_requests_come_page_by_page_each_once(emulator: DropboxSignEmulator, key_conn: str) -> None:
    job_id, ids = make_bulk_send_job(emulator, 250)
    make_requests(emulator, 3)  # not the job's
    make_bulk_send_job(emulator, 2)  # another job's
    pages = DropboxSignHook(key_conn).list_bulk_send_job_signature_requests(job_id, page_size=100)
    assert emulator.requests_log == []  # nothing is fetched before it is asked for

    first = [next(pages) for _ in range(100)]
    assert len(emulator.requests_log) == 1
    listed = [sr["signature_request_id"] for sr in first + list(pages)]

    assert listed == ids
    assert {sr["bulk_send_job_id"] for sr in first} == {job_id}
    assert [(e.method, e.path, e.status) for e in emulator.requests_log] == [
        ("GET", f"/v3/bulk_send_job/{job_id}", 200)
    ] * 3


def test_a_job_is_listed_100_at_a_time_unless_told(emulator: DropboxSignEmulator, key_conn: str) -> None:
    job_id, ids = make_bulk_send_job(emulator, 200)
    hook = DropboxSignHook(key_conn)
    assert [sr["signature_request_id"] for sr in hook.list_bulk_send_job_signature_requests(job_id)] == ids
    assert len(emulator.requests_log) == 2  # an exactly full last page asks for no empty one
    emulator.clear_log()
    listed = hook.list_bulk_send_job_signature_requests(f"  {job_id}\n", page_size=7)
    assert [sr["signature_request_id"] for sr in listed] == ids
    assert len(emulator.requests_log) == 29


def test_an_unknown_job_is_not_found(emulator: DropboxSignEmulator, key_conn: str) -> None:
    make_bulk_send_job(emulator, 1)
    with pytest.raises(DropboxSignNotFoundError) as raised:
        list(DropboxSignHook(key_conn).list_bulk_send_job_signature_requests(UNKNOWN_ID))
    error = raised.value
    assert (error.status_code, error.error_name, error.method, error.path) == (
        404,
        "not_found",
        "GET",
        f"/bulk_send_job/{UNKNOWN_ID}",
    )
    assert statuses(emulator) == [404]


@pytest.mark.parametrize("value", BAD_IDS, ids=[repr(value)[:30] for value in BAD_IDS])
def test_a_bad_job_id_fails_before_any_call(emulator: DropboxSignEmulator, key_conn: str, value: Any) -> None:
    make_bulk_send_job(emulator, 1)
    with pytest.raises(ValueError, match="is not a Dropbox Sign bulk send job id") as raised:
        DropboxSignHook(key_conn).list_bulk_send_job_signature_requests(value)
    assert str(raised.value).startswith(f"bulk_send_job_id {value!r}")
    assert emulator.requests_log == []


@pytest.mark.parametrize("page_size", [0, 101, 2.5, None, True])
def test_a_bad_page_size_of_a_job_list_fails_before_any_call(
    emulator: DropboxSignEmulator, key_conn: str, page_size: Any
) -> None:
    job_id, _ = make_bulk_send_job(emulator, 1)
    hook = DropboxSignHook(key_conn)
    with pytest.raises(ValueError, match=f"page_size {page_size!r}"):
        hook.list_bulk_send_job_signature_requests(job_id, page_size=page_size)
    with pytest.raises(ValueError, match=f"page_size {page_size!r}"):
        hook.list_bulk_send_jobs(page_size=page_size)
    assert emulator.requests_log == []


def test_a_job_page_without_its_requests_is_an_invalid_answer(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    job_id, _ = make_bulk_send_job(emulator, 3)
    emulator.add_odd_answers(
        OddAnswer(
            200,
            {"Content-Type": "application/json"},
            '{"list_info": {"num_pages": 1}}',
            path_prefix=f"/v3/bulk_send_job/{job_id}",
        )
    )
    with pytest.raises(DropboxSignResponseError, match="signature_requests") as raised:
        list(DropboxSignHook(key_conn).list_bulk_send_job_signature_requests(job_id))
    assert raised.value.error_name == "invalid_response"


def test_every_job_of_the_account_is_listed(emulator: DropboxSignEmulator, key_conn: str) -> None:
    assert list(DropboxSignHook(key_conn).list_bulk_send_jobs()) == []
    jobs = [
        emulator.create_bulk_send_job(n, created_at=1_600_000_000 + n)["bulk_send_job"] for n in (1, 2, 3)
    ]
    emulator.clear_log()
    listed = list(DropboxSignHook(key_conn).list_bulk_send_jobs(page_size=2))
    assert listed == jobs[::-1]
    assert [(e.path, e.status) for e in emulator.requests_log] == [("/v3/bulk_send_job/list", 200)] * 2


def test_a_jobs_requests_are_cancelled_one_by_one(emulator: DropboxSignEmulator, key_conn: str) -> None:
    job_id, ids = make_bulk_send_job(emulator, 12)
    hook = DropboxSignHook(key_conn, retry_policy=FAST)
    listed = [
        sr["signature_request_id"] for sr in hook.list_bulk_send_job_signature_requests(job_id, page_size=5)
    ]
    for sr_id in listed:
        hook.cancel_signature_request(sr_id)
    time.sleep(0.3)  # past the emulator's cancel_delay
    for sr_id in ids:
        with pytest.raises(DropboxSignDeletedError):
            hook.get_signature_request(sr_id)
        assert emulator.cancel_calls(sr_id) == 1
        assert emulator.get_state(sr_id) == "canceled"
    assert list(hook.list_bulk_send_job_signature_requests(job_id)) == []
    assert [job["total"] for job in hook.list_bulk_send_jobs()] == [12]


# --- invalid ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", BAD_IDS, ids=[repr(value)[:30] for value in BAD_IDS])
# get and cancel, which both hooks have, are in test_both_hooks.py.
@pytest.mark.parametrize("action", ["remove_signature_request_access"])
def test_an_invalid_id_never_reaches_the_api(
    emulator: DropboxSignEmulator, key_conn: str, action: str, value: Any
) -> None:
    hook = DropboxSignHook(key_conn)
    with pytest.raises(ValueError, match="is not a Dropbox Sign id") as raised:
        getattr(hook, action)(value)
    assert repr(value) in str(raised.value)
    assert emulator.requests_log == []


# --- the rate limit ------------------------------------------------------------------------------


def test_twenty_calls_share_a_five_per_second_budget_without_429s(monkeypatch: pytest.MonkeyPatch) -> None:
    with DropboxSignEmulator(api_keys=(SECRET_API_KEY,), rate_limit=5, window_seconds=1) as emulator:
        conn_id = set_connection(monkeypatch, "ds_budget", host=emulator.base_url, password=SECRET_API_KEY)
        sr_ids = make_requests(emulator, 4)
        hook = DropboxSignHook(conn_id)
        got = [hook.get_signature_request(sr_ids[i % 4])["signature_request_id"] for i in range(20)]
        log = list(emulator.requests_log)

    assert got == [sr_ids[i % 4] for i in range(20)]
    assert sum(entry.status == 429 for entry in log) <= 1
    per_window = Counter(math.floor(entry.time) for entry in log if entry.status == 200)
    assert max(per_window.values()) <= 5
    assert sum(per_window.values()) == 20
    assert len(per_window) >= 4


def test_the_client_side_cap_holds_and_max_rate_limit_wait_gives_up(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = set_connection(
        monkeypatch,
        "ds_capped",
        host=emulator.base_url,
        password=SECRET_API_KEY,
        extra={"max_requests_per_minute": 3},
    )
    sr_id = make_requests(emulator, 1)[0]
    hook = DropboxSignHook(conn_id, retry_policy=RetryPolicy(max_rate_limit_wait=0.5))
    for _ in range(3):
        hook.get_signature_request(sr_id)
    with pytest.raises(DropboxSignRateLimitError) as raised:
        hook.get_signature_request(sr_id)
    error = raised.value
    assert error.status_code is None  # decided here: the request was not sent
    assert (error.error_name, error.method, error.path) == (
        "exceeded_rate",
        "GET",
        f"/signature_request/{sr_id}",
    )
    assert error.retry_after is not None
    assert 55 < error.retry_after <= 60
    assert len(emulator.requests_log) == 3


def test_a_429_waits_for_the_announced_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    from dropbox_sign_provider.hooks.budget import forget_budgets

    with DropboxSignEmulator(api_keys=(SECRET_API_KEY,), rate_limit=2, window_seconds=1) as emulator:
        conn_id = set_connection(monkeypatch, "ds_reset", host=emulator.base_url, password=SECRET_API_KEY)
        sr_id = make_requests(emulator, 1)[0]
        # Start at the beginning of a window, so that all of what follows happens in the same one.
        time.sleep(1 - time.time() % 1 + 0.02)
        # Another process spends the window, unknown to this one's budget.
        other = DropboxSignHook(conn_id)
        other.get_signature_request(sr_id)
        other.get_signature_request(sr_id)
        forget_budgets()

        DropboxSignHook(conn_id, retry_policy=FAST).get_signature_request(sr_id)
        log = list(emulator.requests_log)

    assert [entry.status for entry in log][-2:] == [429, 200]
    limited, retried = log[-2], log[-1]
    # The retry went only once the window of the 429 was over, not after the short backoff.
    assert math.floor(retried.time) > math.floor(limited.time)


# --- retries -------------------------------------------------------------------------------------


def test_calls_get_through_server_errors_dropped_connections_and_garbled_answers(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    sr_ids = make_requests(emulator, 8)
    emulator.set_fault(error_rate=0.3, drop_rate=0.2, malformed_rate=0.15, seed=11)
    hook = DropboxSignHook(
        key_conn, retry_policy=RetryPolicy(max_retries=10, backoff_base=0.01, backoff_max=0.05)
    )

    got = [hook.get_signature_request(sr_id)["signature_request_id"] for sr_id in sr_ids]
    for sr_id in sr_ids[:4]:
        hook.cancel_signature_request(sr_id)

    assert got == sr_ids
    seen = Counter(statuses(emulator))
    assert seen[0] > 0  # dropped connections
    assert sum(n for status, n in seen.items() if status >= 500) > 0
    assert len(emulator.requests_log) > 12
    # An injected failure happens in front of the API: every cancel reached it exactly once.
    assert [emulator.cancel_calls(sr_id) for sr_id in sr_ids[:4]] == [1] * 4
    assert [emulator.get_state(sr_id) for sr_id in sr_ids[:4]] == ["cancel_requested"] * 4


def test_max_retries_from_the_constructor_is_used(emulator: DropboxSignEmulator, key_conn: str) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(error_rate=1.0, error_statuses=(500,), seed=3)
    # One retry after the default first backoff of 0.5 to 1 s.
    with pytest.raises(DropboxSignServerError):
        DropboxSignHook(key_conn, retry_policy=RetryPolicy(max_retries=1)).get_signature_request(sr_id)
    assert statuses(emulator) == [500, 500]


def test_a_429_storm_is_retried_then_raised(emulator: DropboxSignEmulator, key_conn: str) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(rate_limit_storm=1.0, seed=3)
    hook = DropboxSignHook(
        key_conn, retry_policy=RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02)
    )
    with pytest.raises(DropboxSignRateLimitError) as raised:
        hook.get_signature_request(sr_id)
    assert raised.value.status_code == 429
    assert raised.value.retry_after is not None
    log = emulator.requests_log
    assert [entry.status for entry in log] == [429, 429]
    # The storm announced a reset about a second ahead; the retry waited for it.
    assert math.floor(log[1].time) > math.floor(log[0].time)


# --- interrupted calls ---------------------------------------------------------------------------


@contextlib.contextmanager
def alarm(seconds: float, exc: BaseException) -> Iterator[None]:
    """Raise ``exc`` in the main thread after ``seconds``, as Airflow's execution_timeout does."""

    def handler(signum: int, frame: object) -> None:
        raise exc

    previous = signal.signal(signal.SIGALRM, handler)
    # pytest-timeout may use the same timer: give it back what was left of it.
    left, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if left:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, left - (time.monotonic() - started)), interval)


def test_a_call_interrupted_by_a_task_timeout_does_not_stall_the_account(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(latency=0.6)
    hook = DropboxSignHook(key_conn)
    # The first call of a fresh budget is its probe; it is interrupted before any answer.
    with alarm(0.3, AirflowTaskTimeout("execution_timeout")), pytest.raises(AirflowTaskTimeout):
        hook.get_signature_request(sr_id)
    emulator.clear_faults()

    with alarm(3.0, AssertionError("the budget still waits for the interrupted probe")):
        assert DropboxSignHook(key_conn).get_signature_request(sr_id)["signature_request_id"] == sr_id


# --- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cap", ["0.5", 0.5, 2.5, "0"])
def test_a_cap_that_is_not_a_whole_number_is_refused_naming_the_connection(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, cap: object
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
        connection_uri_json(emulator.base_url, max_requests_per_minute=cap),
    )
    with pytest.raises(ValueError, match=r"dropbox_sign_default.*max_requests_per_minute"):
        DropboxSignHook().get_account()
    assert emulator.requests_log == []


@pytest.mark.parametrize("method", ["run", "run_and_check", "run_with_advanced_retry"])
def test_no_raw_http_call_can_bypass_the_budget(method: str) -> None:
    # Every call goes through the account's budget and the id checks: the hooks offer no raw call.
    assert not hasattr(DropboxSignHook(), method)
    assert not hasattr(DropboxSignAsyncHook(), method)
