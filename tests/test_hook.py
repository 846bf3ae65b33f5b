"""
DropboxSignHook against the bundled emulator over loopback: authentication, the connection's
checks, every error the API answers, pagination, the shared rate-limit budget and retries.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowTaskTimeout

from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignConflictError,
    DropboxSignConnectionError,
    DropboxSignDeletedError,
    DropboxSignError,
    DropboxSignForbiddenError,
    DropboxSignNotFoundError,
    DropboxSignRateLimitError,
    DropboxSignResponseError,
    DropboxSignServerError,
    DropboxSignUnauthorizedError,
)
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.conftest import connection_uri_json, make_requests

API_KEY = "sk-live-SECRETKEY123"
ACCESS_TOKEN = "tok-live-SECRETTOKEN456"
#: Every form in which a credential could leak: as configured, and as sent on the wire.
SECRETS = (
    API_KEY,
    ACCESS_TOKEN,
    "SECRETKEY",
    "SECRETTOKEN",
    base64.b64encode(f"{API_KEY}:".encode()).decode(),
)
UNKNOWN_ID = "0123456789abcdef0123456789abcdef01234567"

#: Retries that take milliseconds, not seconds.
FAST = RetryPolicy(max_retries=6, backoff_base=0.01, backoff_max=0.05, max_rate_limit_wait=10.0)
NO_RETRY = RetryPolicy(max_retries=0, backoff_base=0.01, backoff_max=0.05, max_rate_limit_wait=10.0)


@pytest.fixture
def emulator() -> Iterator[DropboxSignEmulator]:
    """The emulator, with credentials that are easy to spot if they leak."""
    with DropboxSignEmulator(api_keys=(API_KEY,), access_tokens=(ACCESS_TOKEN,), cancel_delay=0.2) as emu:
        yield emu


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    """Define ``conn_id`` (a dropbox_sign connection) through its environment variable."""
    conn = {"conn_type": "dropbox_sign", **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


@pytest.fixture
def key_conn(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, "ds_key", host=emulator.base_url, password=API_KEY)


@pytest.fixture
def token_conn(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, "ds_token", host=emulator.url, extra={"access_token": ACCESS_TOKEN})


def statuses(emulator: DropboxSignEmulator) -> list[int]:
    return [entry.status for entry in emulator.requests_log]


# --- authentication and the connection ----------------------------------------------------------


def test_an_api_key_is_sent_as_basic_auth(emulator: DropboxSignEmulator, key_conn: str) -> None:
    hook = DropboxSignHook(key_conn)
    assert hook.get_account()["email_address"] == emulator.email
    assert (
        hook.get_conn().headers["Authorization"]
        == "Basic " + base64.b64encode(b"sk-live-SECRETKEY123:").decode()
    )
    assert statuses(emulator) == [200]


def test_an_access_token_is_sent_as_bearer_auth(emulator: DropboxSignEmulator, token_conn: str) -> None:
    hook = DropboxSignHook(token_conn)
    assert hook.get_account()["account_id"] == emulator.account_id
    assert hook.get_conn().headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert statuses(emulator) == [200]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"password": ACCESS_TOKEN}, id="token-as-api-key"),
        pytest.param({"extra": {"access_token": API_KEY}}, id="api-key-as-token"),
        pytest.param({"password": "sk-live-WRONG"}, id="wrong-api-key"),
    ],
)
def test_a_credential_in_the_wrong_place_is_refused_by_the_api(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any]
) -> None:
    conn_id = set_connection(monkeypatch, "ds_wrong", host=emulator.base_url, **fields)
    with pytest.raises(DropboxSignUnauthorizedError) as raised:
        DropboxSignHook(conn_id).get_account()
    assert (raised.value.status_code, raised.value.error_name) == (401, "unauthorized")
    assert raised.value.error_msg == "Unauthorized user. Invalid credentials supplied."
    assert (raised.value.method, raised.value.path) == ("GET", "/account")
    assert statuses(emulator) == [401]  # never retried


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({}, "has no credentials", id="neither"),
        pytest.param({"password": "  "}, "has no credentials", id="blank-key"),
        pytest.param(
            {"password": API_KEY, "extra": {"access_token": ACCESS_TOKEN}}, "has both an API key", id="both"
        ),
    ],
)
def test_a_connection_needs_exactly_one_credential(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], message: str
) -> None:
    conn_id = set_connection(monkeypatch, "ds_creds_check", host=emulator.base_url, **fields)
    with pytest.raises(ValueError, match=message) as raised:
        DropboxSignHook(conn_id).get_account()
    assert "'ds_creds_check'" in str(raised.value)
    assert not any(secret in str(raised.value) for secret in SECRETS)
    assert emulator.requests_log == []


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
    fields: dict[str, Any] = {"password": API_KEY}
    if host is not None:
        fields["host"] = host
    if port is not None:
        fields["port"] = port
    conn_id = set_connection(monkeypatch, "ds_host", **fields)
    assert DropboxSignHook(conn_id).settings.base_url == expected


@pytest.mark.parametrize(
    "host", ["http://api.example.com", "http://10.0.0.8:8080", "http://127.0.0.1.nip.io"]
)
def test_plain_http_to_another_host_is_refused(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    conn_id = set_connection(monkeypatch, "ds_insecure", host=host, password=API_KEY)
    with pytest.raises(ValueError, match="plain http://") as raised:
        DropboxSignHook(conn_id).settings  # noqa: B018
    assert "'ds_insecure'" in str(raised.value)
    assert "allow_insecure_http" in str(raised.value)


@pytest.mark.parametrize("flag", [True, "true", "True", "1", "yes"])
def test_plain_http_is_allowed_when_the_connection_says_so(
    monkeypatch: pytest.MonkeyPatch, flag: object
) -> None:
    conn_id = set_connection(
        monkeypatch,
        "ds_insecure_ok",
        host="http://api.example.com",
        password=API_KEY,
        extra={"allow_insecure_http": flag},
    )
    assert DropboxSignHook(conn_id).settings.base_url == "http://api.example.com/v3"


@pytest.mark.parametrize("flag", [False, "false", "no", "0"])
def test_plain_http_stays_refused_when_the_flag_is_false(
    monkeypatch: pytest.MonkeyPatch, flag: object
) -> None:
    conn_id = set_connection(
        monkeypatch,
        "ds_insecure_no",
        host="http://api.example.com",
        password=API_KEY,
        extra={"allow_insecure_http": flag},
    )
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
    conn_id = set_connection(monkeypatch, "ds_bad_host", host=host, password=API_KEY)
    with pytest.raises(ValueError, match="is not an http") as raised:
        DropboxSignHook(conn_id).settings  # noqa: B018
    assert "'ds_bad_host'" in str(raised.value)


def test_a_password_typed_into_the_host_is_refused_without_being_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn_id = set_connection(
        monkeypatch, "ds_userinfo", host=f"https://{API_KEY}:@api.hellosign.com", password=API_KEY
    )
    with pytest.raises(ValueError, match="is not an http") as raised:
        DropboxSignHook(conn_id).settings  # noqa: B018
    assert "'ds_userinfo'" in str(raised.value)
    assert not any(secret in str(raised.value) for secret in SECRETS)


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
        monkeypatch, "ds_numbers", host="https://api.hellosign.com", password=API_KEY, extra=extra
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

    budget = DropboxSignHook(key_conn).settings.budget
    same_key = set_connection(monkeypatch, "ds_key_again", host=emulator.url, password=API_KEY)
    assert DropboxSignHook(key_conn).settings.budget is budget
    assert DropboxSignHook(same_key).settings.budget is budget
    assert asyncio.run(DropboxSignAsyncHook(key_conn).get_settings()).budget is budget
    assert DropboxSignHook(token_conn).settings.budget is not budget


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
    assert "'ds_no_creds' has no credentials" in message
    assert emulator.requests_log == []


# --- get, cancel, remove ---------------------------------------------------------------------------


def test_get_answers_the_signature_request(emulator: DropboxSignEmulator, key_conn: str) -> None:
    created = emulator.create_signature_request(title="NDA", metadata={"team": "legal"})
    got = DropboxSignHook(key_conn).get_signature_request(created["signature_request_id"])
    assert got == created
    assert [(e.method, e.path) for e in emulator.requests_log] == [
        ("GET", f"/v3/signature_request/{created['signature_request_id']}")
    ]


def test_cancel_queues_the_cancellation_and_get_then_answers_deleted(
    emulator: DropboxSignEmulator, key_conn: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    hook = DropboxSignHook(key_conn)
    assert hook.cancel_signature_request(sr_id) is None
    assert emulator.get_state(sr_id) == "cancel_requested"
    assert emulator.cancel_calls(sr_id) == 1

    time.sleep(emulator.cancel_delay + 0.1)
    with pytest.raises(DropboxSignDeletedError) as raised:
        hook.get_signature_request(sr_id)
    error = raised.value
    assert (error.status_code, error.error_name, error.error_msg) == (
        410,
        "deleted",
        "This resource has been deleted.",
    )
    assert (error.method, error.path) == ("GET", f"/signature_request/{sr_id}")
    assert statuses(emulator) == [200, 410]


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


def _cancel_completed(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> tuple[str, Callable[[], Any]]:
    sr_id = make_requests(emulator, 1, is_complete=True)[0]
    return f"/signature_request/cancel/{sr_id}", lambda: hook.cancel_signature_request(sr_id)


def _get_forbidden(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> tuple[str, Callable[[], Any]]:
    sr_id = make_requests(emulator, 1, forbidden=True)[0]
    return f"/signature_request/{sr_id}", lambda: hook.get_signature_request(sr_id)


def _get_unknown(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> tuple[str, Callable[[], Any]]:
    return f"/signature_request/{UNKNOWN_ID}", lambda: hook.get_signature_request(UNKNOWN_ID)


def _cancel_with_fault(
    status: int,
) -> Callable[[DropboxSignEmulator, DropboxSignHook], tuple[str, Callable[[], Any]]]:
    def setup(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> tuple[str, Callable[[], Any]]:
        sr_id = make_requests(emulator, 1)[0]
        emulator.set_fault(error_rate=1.0, error_statuses=(status,), seed=1)
        return f"/signature_request/cancel/{sr_id}", lambda: hook.cancel_signature_request(sr_id)

    return setup


def _get_in_storm(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> tuple[str, Callable[[], Any]]:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(rate_limit_storm=1.0, seed=1)
    return f"/signature_request/{sr_id}", lambda: hook.get_signature_request(sr_id)


def _get_malformed(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> tuple[str, Callable[[], Any]]:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(malformed_rate=1.0, seed=1)
    return f"/signature_request/{sr_id}", lambda: hook.get_signature_request(sr_id)


ERROR_CASES = [
    pytest.param(
        _cancel_completed,
        DropboxSignBadRequestError,
        400,
        "bad_request",
        "This request has already been completed and cannot be canceled.",
        "POST",
        id="400",
    ),
    pytest.param(
        _get_forbidden,
        DropboxSignForbiddenError,
        403,
        "forbidden",
        "You do not have access to this signature request.",
        "GET",
        id="403",
    ),
    pytest.param(_get_unknown, DropboxSignNotFoundError, 404, "not_found", "Not found.", "GET", id="404"),
    pytest.param(
        _cancel_with_fault(409),
        DropboxSignConflictError,
        409,
        "conflict",
        "Injected 409 fault.",
        "POST",
        id="409",
    ),
    pytest.param(
        _get_in_storm, DropboxSignRateLimitError, 429, "exceeded_rate", "Too many requests.", "GET", id="429"
    ),
    pytest.param(
        _cancel_with_fault(500),
        DropboxSignServerError,
        500,
        "internal_error",
        "An internal error occurred. Please try again later.",
        "POST",
        id="500",
    ),
    pytest.param(
        _cancel_with_fault(502),
        DropboxSignServerError,
        502,
        "server_error",
        "<html>\r\n<head><title>502 Bad Gateway</title></head>",
        "POST",
        id="502-html",
    ),
    pytest.param(
        _cancel_with_fault(503),
        DropboxSignServerError,
        503,
        "server_error",
        "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>",
        "POST",
        id="503-html",
    ),
    pytest.param(
        _get_malformed,
        DropboxSignResponseError,
        200,
        "invalid_response",
        'expected a JSON object, got \'{"signature_request": {"signature_request_id": "\'',
        "GET",
        id="unreadable-200",
    ),
]


@pytest.mark.parametrize(("setup", "cls", "status", "name", "msg", "method"), ERROR_CASES)
def test_every_error_answer_raises_its_typed_error(
    emulator: DropboxSignEmulator,
    key_conn: str,
    setup: Callable[[DropboxSignEmulator, DropboxSignHook], tuple[str, Callable[[], Any]]],
    cls: type[DropboxSignError],
    status: int,
    name: str,
    msg: str,
    method: str,
) -> None:
    # No retries, so that retryable errors surface at once; the others would not be retried anyway.
    hook = DropboxSignHook(key_conn, retry_policy=NO_RETRY)
    path, call = setup(emulator, hook)
    with pytest.raises(cls) as raised:
        call()
    error = raised.value
    assert type(error) is cls
    assert (error.status_code, error.error_name, error.method, error.path) == (status, name, method, path)
    assert error.error_msg.startswith(msg)
    assert statuses(emulator) == [status]


@pytest.mark.parametrize(("setup", "cls", "status"), [case.values[:3] for case in ERROR_CASES[:4]])
def test_client_errors_are_never_retried(
    emulator: DropboxSignEmulator,
    key_conn: str,
    setup: Callable[[DropboxSignEmulator, DropboxSignHook], tuple[str, Callable[[], Any]]],
    cls: type[DropboxSignError],
    status: int,
) -> None:
    _, call = setup(emulator, DropboxSignHook(key_conn, retry_policy=FAST))
    with pytest.raises(cls):
        call()
    assert statuses(emulator) == [status]


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


@pytest.mark.parametrize("page_size", [0, -1, 101, 2.5, "10", None, True])
def test_a_bad_page_size_fails_before_any_call(
    emulator: DropboxSignEmulator, key_conn: str, page_size: Any
) -> None:
    with pytest.raises(ValueError, match=f"page_size {page_size!r}"):
        DropboxSignHook(key_conn).list_signature_requests(page_size=page_size)
    assert emulator.requests_log == []


# --- invalid ids ---------------------------------------------------------------------------------

BAD_IDS = [
    "",
    "   ",
    "g" * 40,
    "0123456789abcde",
    "f" * 65,
    "../account",
    "%2e%2e/account",
    f"{UNKNOWN_ID}/../../account",
    f"{UNKNOWN_ID[:10]}\x00{UNKNOWN_ID[10:]}",
    f"{UNKNOWN_ID}\r\nX-Injected: 1",
    UNKNOWN_ID.replace("a", "\u0430"),
    UNKNOWN_ID.replace("1", "\uff11"),
    None,
    12345678901234567890,
]


@pytest.mark.parametrize("value", BAD_IDS, ids=[repr(value)[:30] for value in BAD_IDS])
@pytest.mark.parametrize(
    "action", ["get_signature_request", "cancel_signature_request", "remove_signature_request_access"]
)
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
    with DropboxSignEmulator(api_keys=(API_KEY,), rate_limit=5, window_seconds=1) as emulator:
        conn_id = set_connection(monkeypatch, "ds_budget", host=emulator.base_url, password=API_KEY)
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
        password=API_KEY,
        extra={"max_requests_per_minute": 3},
    )
    sr_id = make_requests(emulator, 1)[0]
    hook = DropboxSignHook(conn_id, max_rate_limit_wait=0.5)
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
    from dropbox_sign_provider.hooks.policy import forget_budgets

    with DropboxSignEmulator(api_keys=(API_KEY,), rate_limit=2, window_seconds=1) as emulator:
        conn_id = set_connection(monkeypatch, "ds_reset", host=emulator.base_url, password=API_KEY)
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


@pytest.mark.parametrize(
    ("fault", "cls", "status", "logged"),
    [
        pytest.param(
            {"error_rate": 1.0, "error_statuses": (503,)}, DropboxSignServerError, 503, 503, id="503"
        ),
        pytest.param(
            {"error_rate": 1.0, "error_statuses": (500,)}, DropboxSignServerError, 500, 500, id="500"
        ),
        pytest.param({"drop_rate": 1.0}, DropboxSignConnectionError, None, 0, id="dropped"),
        pytest.param({"malformed_rate": 1.0}, DropboxSignResponseError, 200, 200, id="garbled"),
    ],
)
def test_max_retries_exhausted_raises_the_last_typed_error(
    emulator: DropboxSignEmulator,
    key_conn: str,
    fault: dict[str, Any],
    cls: type[DropboxSignError],
    status: int | None,
    logged: int,
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(seed=3, **fault)
    hook = DropboxSignHook(
        key_conn, retry_policy=RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)
    )
    with pytest.raises(cls) as raised:
        hook.cancel_signature_request(sr_id)
    error = raised.value
    assert error.status_code == status
    assert (error.method, error.path) == ("POST", f"/signature_request/cancel/{sr_id}")
    assert statuses(emulator) == [logged] * 3
    if cls is DropboxSignConnectionError:
        assert error.error_name == "connection_error"
        assert isinstance(error.__cause__, requests.ConnectionError)
    assert emulator.cancel_calls(sr_id) == 0


def test_max_retries_from_the_constructor_is_used(emulator: DropboxSignEmulator, key_conn: str) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(error_rate=1.0, error_statuses=(500,), seed=3)
    # One retry after the default first backoff of 0.5 to 1 s.
    with pytest.raises(DropboxSignServerError):
        DropboxSignHook(key_conn, max_retries=1).get_signature_request(sr_id)
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


def test_no_secret_reaches_logs_or_errors(
    emulator: DropboxSignEmulator,
    key_conn: str,
    token_conn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    sr_ids = make_requests(emulator, 3)
    texts: list[str] = []

    def record(error: BaseException) -> None:
        while error is not None:
            texts.extend([str(error), repr(error)])
            error = error.__cause__ or error.__context__  # type: ignore[assignment]

    for conn_id in (key_conn, token_conn):
        hook = DropboxSignHook(conn_id, retry_policy=FAST)
        hook.get_signature_request(sr_ids[0])
        list(hook.list_signature_requests(page_size=2))
        emulator.set_fault(error_rate=0.5, drop_rate=0.3, seed=5)
        hook.get_signature_request(sr_ids[1])
        emulator.set_fault(drop_rate=1.0)
        with pytest.raises(DropboxSignConnectionError) as dropped:
            hook.cancel_signature_request(sr_ids[2])
        record(dropped.value)
        emulator.clear_faults()
        texts.append(repr(hook.settings))

    wrong = set_connection(
        monkeypatch, "ds_leak_wrong", host=emulator.base_url, password=API_KEY + "-revoked"
    )
    with pytest.raises(DropboxSignUnauthorizedError) as refused:
        DropboxSignHook(wrong).get_account()
    record(refused.value)
    texts.append(DropboxSignHook(wrong).test_connection()[1])
    both = set_connection(
        monkeypatch,
        "ds_leak_both",
        host=emulator.base_url,
        password=API_KEY,
        extra={"access_token": ACCESS_TOKEN},
    )
    with pytest.raises(ValueError, match="both") as invalid:
        DropboxSignHook(both).get_account()
    record(invalid.value)

    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    assert "retrying" in logs  # the retries were logged, so the check below saw them
    assert "127.0.0.1" in logs  # and so were the HTTP client's own debug lines
    for text in [logs, *texts]:
        for secret in SECRETS:
            assert secret not in text


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
def test_raw_http_calls_that_would_bypass_the_budget_are_refused(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, method: str
) -> None:
    raw_call = getattr(DropboxSignHook(), method)
    with pytest.raises(NotImplementedError, match="rate-limit budget"):
        raw_call("/account")
    assert emulator.requests_log == []
