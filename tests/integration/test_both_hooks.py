"""
What the sync and async hooks share, written once and run against each (the ``client`` fixture):
credentials, the connection's checks, a cancel then a get, every error the API answers, ids
refused before a request, retries given up, odd answers from the transport, and no secret in
any log or error. What only one hook does stays in test_hook.py or test_hook_async.py.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import requests

from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignConflictError,
    DropboxSignConnectionError,
    DropboxSignDeletedError,
    DropboxSignError,
    DropboxSignForbiddenError,
    DropboxSignNotFoundError,
    DropboxSignRateLimitError,
    DropboxSignRedirectError,
    DropboxSignResponseError,
    DropboxSignResponseTooLargeError,
    DropboxSignServerError,
    DropboxSignTLSError,
    DropboxSignUnauthorizedError,
)
from dropbox_sign_provider.hooks.call import MAX_RESPONSE_BYTES
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator, OddAnswer
from tests.helpers import (
    BAD_IDS,
    FAST,
    NO_RETRY,
    SECRET_ACCESS_TOKEN,
    SECRET_API_KEY,
    SECRETS,
    UNKNOWN_ID,
    HookClient,
    make_requests,
    set_connection,
    statuses,
)

pytestmark = pytest.mark.emulator(api_keys=(SECRET_API_KEY,), access_tokens=(SECRET_ACCESS_TOKEN,))

Client = Callable[..., HookClient]


# --- authentication and the connection ----------------------------------------------------------


def test_an_api_key_is_sent_as_basic_auth(
    emulator: DropboxSignEmulator, key_conn: str, client: Client
) -> None:
    created = emulator.create_signature_request(title="NDA")
    hook = client(key_conn)
    assert hook.get(created["signature_request_id"]) == created
    assert hook.authorization() == "Basic " + base64.b64encode(b"sk-live-SECRETKEY123:").decode()
    assert statuses(emulator) == [200]


def test_an_access_token_is_sent_as_bearer_auth(
    emulator: DropboxSignEmulator, token_conn: str, client: Client
) -> None:
    created = emulator.create_signature_request(title="Offer")
    hook = client(token_conn)
    assert hook.get(created["signature_request_id"]) == created
    assert hook.authorization() == f"Bearer {SECRET_ACCESS_TOKEN}"
    assert statuses(emulator) == [200]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"password": SECRET_ACCESS_TOKEN}, id="token-as-api-key"),
        pytest.param({"extra": {"access_token": SECRET_API_KEY}}, id="api-key-as-token"),
        pytest.param({"password": "sk-live-WRONG"}, id="wrong-api-key"),
    ],
)
def test_a_credential_in_the_wrong_place_is_refused_by_the_api(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], client: Client
) -> None:
    conn_id = set_connection(monkeypatch, "ds_wrong", host=emulator.base_url, **fields)
    with pytest.raises(DropboxSignUnauthorizedError) as raised:
        client(conn_id).get(UNKNOWN_ID)
    assert (raised.value.status_code, raised.value.error_name) == (401, "unauthorized")
    assert raised.value.error_msg == "Unauthorized user. Invalid credentials supplied."
    assert (raised.value.method, raised.value.path) == ("GET", f"/signature_request/{UNKNOWN_ID}")
    assert statuses(emulator) == [401]  # never retried


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({}, "has no credentials", id="neither"),
        pytest.param({"password": "  "}, "has no credentials", id="blank-key"),
        pytest.param(
            {"password": SECRET_API_KEY, "extra": {"access_token": SECRET_ACCESS_TOKEN}},
            "has both an API key",
            id="both",
        ),
    ],
)
def test_a_connection_needs_exactly_one_credential(
    emulator: DropboxSignEmulator,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    message: str,
    client: Client,
) -> None:
    conn_id = set_connection(monkeypatch, "ds_creds_check", host=emulator.base_url, **fields)
    with pytest.raises(ValueError, match=message) as raised:
        client(conn_id).get(UNKNOWN_ID)
    assert "'ds_creds_check'" in str(raised.value)
    assert not any(secret in str(raised.value) for secret in SECRETS)
    assert emulator.requests_log == []


@pytest.mark.parametrize(
    "host", ["http://api.example.com", "http://10.0.0.8:8080", "http://127.0.0.1.nip.io"]
)
def test_plain_http_to_another_host_is_refused(
    monkeypatch: pytest.MonkeyPatch, host: str, client: Client
) -> None:
    conn_id = set_connection(monkeypatch, "ds_insecure", host=host, password=SECRET_API_KEY)
    with pytest.raises(ValueError, match="plain http://") as raised:
        client(conn_id).settings()
    assert "'ds_insecure'" in str(raised.value)
    assert "allow_insecure_http" in str(raised.value)


# --- get and cancel --------------------------------------------------------------------------------


def test_cancel_queues_the_cancellation_and_get_then_answers_deleted(
    emulator: DropboxSignEmulator, key_conn: str, client: Client
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    hook = client(key_conn)
    assert hook.cancel(sr_id) is None
    assert emulator.get_state(sr_id) == "cancel_requested"
    assert emulator.cancel_calls(sr_id) == 1

    time.sleep(emulator.cancel_delay + 0.1)
    with pytest.raises(DropboxSignDeletedError) as raised:
        hook.get(sr_id)
    error = raised.value
    assert (error.status_code, error.error_name, error.error_msg) == (
        410,
        "deleted",
        "This resource has been deleted.",
    )
    assert (error.method, error.path) == ("GET", f"/signature_request/{sr_id}")
    assert emulator.cancel_calls(sr_id) == 1
    assert statuses(emulator) == [200, 410]


# --- every error, typed --------------------------------------------------------------------------

#: Makes the emulator answer with an error; says which call meets it, on which id and path.
Setup = Callable[[DropboxSignEmulator], tuple[str, str, str]]


def _cancel_completed(emulator: DropboxSignEmulator) -> tuple[str, str, str]:
    return "cancel", make_requests(emulator, 1, is_complete=True)[0], "/signature_request/cancel/{}"


def _get_forbidden(emulator: DropboxSignEmulator) -> tuple[str, str, str]:
    return "get", make_requests(emulator, 1, forbidden=True)[0], "/signature_request/{}"


def _get_unknown(emulator: DropboxSignEmulator) -> tuple[str, str, str]:
    return "get", UNKNOWN_ID, "/signature_request/{}"


def _with_fault(action: str, **fault: Any) -> Setup:
    def setup(emulator: DropboxSignEmulator) -> tuple[str, str, str]:
        sr_id = make_requests(emulator, 1)[0]
        emulator.set_fault(seed=1, **fault)
        path = "/signature_request/cancel/{}" if action == "cancel" else "/signature_request/{}"
        return action, sr_id, path

    return setup


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
        _with_fault("cancel", error_rate=1.0, error_statuses=(409,)),
        DropboxSignConflictError,
        409,
        "conflict",
        "Injected 409 fault.",
        "POST",
        id="409",
    ),
    pytest.param(
        _with_fault("get", rate_limit_storm=1.0),
        DropboxSignRateLimitError,
        429,
        "exceeded_rate",
        "Too many requests.",
        "GET",
        id="429",
    ),
    pytest.param(
        _with_fault("cancel", error_rate=1.0, error_statuses=(500,)),
        DropboxSignServerError,
        500,
        "internal_error",
        "An internal error occurred. Please try again later.",
        "POST",
        id="500",
    ),
    pytest.param(
        _with_fault("cancel", error_rate=1.0, error_statuses=(502,)),
        DropboxSignServerError,
        502,
        "server_error",
        "<html>\r\n<head><title>502 Bad Gateway</title></head>",
        "POST",
        id="502-html",
    ),
    pytest.param(
        _with_fault("cancel", error_rate=1.0, error_statuses=(503,)),
        DropboxSignServerError,
        503,
        "server_error",
        "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>",
        "POST",
        id="503-html",
    ),
    pytest.param(
        _with_fault("get", error_rate=1.0, error_statuses=(504,)),
        DropboxSignServerError,
        504,
        "server_error",
        "<html>",
        "GET",
        id="504-html",
    ),
    pytest.param(
        _with_fault("get", malformed_rate=1.0),
        DropboxSignResponseError,
        200,
        "invalid_response",
        'expected a JSON object, got \'{"signature_request": {"signature_request_id": "\'',
        "GET",
        id="unreadable-200",
    ),
]


def _call(hook: HookClient, action: str, sr_id: str) -> Any:
    return hook.cancel(sr_id) if action == "cancel" else hook.get(sr_id)


@pytest.mark.parametrize(("setup", "cls", "status", "name", "msg", "method"), ERROR_CASES)
def test_every_error_answer_raises_its_typed_error(
    emulator: DropboxSignEmulator,
    key_conn: str,
    setup: Setup,
    cls: type[DropboxSignError],
    status: int,
    name: str,
    msg: str,
    method: str,
    client: Client,
) -> None:
    action, sr_id, path = setup(emulator)
    # No retries, so that retryable errors surface at once; the others would not be retried anyway.
    with pytest.raises(cls) as raised:
        _call(client(key_conn, retry_policy=NO_RETRY), action, sr_id)
    error = raised.value
    assert type(error) is cls
    assert (error.status_code, error.error_name) == (status, name)
    assert (error.method, error.path) == (method, path.format(sr_id))
    assert error.error_msg
    assert error.error_msg.startswith(msg)
    assert statuses(emulator) == [status]


@pytest.mark.parametrize(("setup", "cls", "status"), [case.values[:3] for case in ERROR_CASES[:4]])
def test_client_errors_are_never_retried(
    emulator: DropboxSignEmulator,
    key_conn: str,
    setup: Setup,
    cls: type[DropboxSignError],
    status: int,
    client: Client,
) -> None:
    action, sr_id, _ = setup(emulator)
    with pytest.raises(cls):
        _call(client(key_conn, retry_policy=FAST), action, sr_id)
    assert statuses(emulator) == [status]


# --- invalid ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", BAD_IDS, ids=[repr(value)[:30] for value in BAD_IDS])
@pytest.mark.parametrize("action", ["get", "cancel"])
def test_an_invalid_id_never_reaches_the_api(
    emulator: DropboxSignEmulator, key_conn: str, action: str, value: Any, client: Client
) -> None:
    with pytest.raises(ValueError, match="is not a Dropbox Sign id") as raised:
        _call(client(key_conn), action, value)
    assert repr(value) in str(raised.value)
    assert emulator.requests_log == []


# --- retries -------------------------------------------------------------------------------------


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
    client: Client,
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(seed=3, **fault)
    hook = client(key_conn, retry_policy=RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02))
    with pytest.raises(cls) as raised:
        hook.cancel(sr_id)
    error = raised.value
    assert error.status_code == status
    assert (error.method, error.path) == ("POST", f"/signature_request/cancel/{sr_id}")
    assert statuses(emulator) == [logged] * 3
    if cls is DropboxSignConnectionError:
        assert error.error_name == "connection_error"
        assert isinstance(error.__cause__, hook.transport_error)
    assert emulator.cancel_calls(sr_id) == 0


# --- odd answers from the transport ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "name", "shown"),
    [
        pytest.param(
            lambda emu: OddAnswer(302, {"Location": f"{emu.url}/v3/account"}, method="POST"),
            "redirect",
            lambda emu: f"redirected to '{emu.url.split('://')[1]}'",
            id="302-to-a-call-that-succeeds",
        ),
        pytest.param(
            lambda emu: OddAnswer(307, {"Location": f"{emu.base_url}/signature_request/cancel/x"}, times=50),
            "redirect",
            lambda emu: f"redirected to '{emu.url.split('://')[1]}'",
            id="307-loop",
        ),
        pytest.param(
            lambda emu: OddAnswer(
                301, {"Location": "https://admin:HUNTER2@sso.example.com:8443/login?token=T0KEN#top"}
            ),
            "redirect",
            lambda emu: "redirected to 'sso.example.com:8443'",
            id="301-with-credentials-in-location",
        ),
        pytest.param(
            lambda emu: OddAnswer(302, {"Location": "/v3/account?api_key=T0KEN"}),
            "redirect",
            lambda emu: "redirected to a path on the same host",
            id="302-relative",
        ),
        pytest.param(
            lambda emu: OddAnswer(304), "redirect", lambda emu: "redirected to no Location", id="304"
        ),
        pytest.param(
            lambda emu: OddAnswer(101), "unexpected_status", lambda emu: "an interim status", id="101"
        ),
    ],
)
def test_only_a_2xx_is_an_answer_and_redirects_are_never_followed(
    emulator: DropboxSignEmulator,
    key_conn: str,
    client: Client,
    answer: Callable[[DropboxSignEmulator], OddAnswer],
    name: str,
    shown: Callable[[DropboxSignEmulator], str],
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    odd = answer(emulator)
    emulator.add_odd_answers(odd)
    with pytest.raises(DropboxSignRedirectError) as raised:
        client(key_conn, retry_policy=FAST).cancel(sr_id)
    error = raised.value
    assert (error.status_code, error.error_name) == (odd.status, name)
    assert (error.method, error.path) == ("POST", f"/signature_request/cancel/{sr_id}")
    assert shown(emulator) in str(error)
    for secret in ("admin", "HUNTER2", "T0KEN", "login", "top"):
        assert secret not in str(error)
    # Sent once, neither retried nor followed; nothing was cancelled.
    assert [(entry.method, entry.status) for entry in emulator.requests_log] == [("POST", odd.status)]
    assert emulator.get_state(sr_id) == "awaiting_signature"
    assert emulator.cancel_calls(sr_id) == 0


def test_a_redirect_error_survives_pickling() -> None:
    import pickle

    error = DropboxSignRedirectError(302, "redirect", "redirected", method="POST", path="/account")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301
    assert type(copy) is DropboxSignRedirectError
    assert (copy.status_code, copy.error_name, copy.method, copy.path) == (
        302,
        "redirect",
        "POST",
        "/account",
    )


def test_a_body_the_client_cannot_decode_is_retried_as_a_typed_error(
    emulator: DropboxSignEmulator, key_conn: str, client: Client
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.add_odd_answers(OddAnswer(200, {"Content-Encoding": "gzip"}, body=b"not gzip at all"))
    got = client(key_conn, retry_policy=FAST).get(sr_id)
    assert got["signature_request_id"] == sr_id
    assert statuses(emulator) == [200, 200]

    emulator.add_odd_answers(OddAnswer(200, {"Content-Encoding": "gzip"}, body=b"not gzip", times=10))
    with pytest.raises(DropboxSignConnectionError) as raised:
        client(key_conn, retry_policy=NO_RETRY).get(sr_id)
    assert raised.value.status_code is None
    assert isinstance(raised.value.__cause__, requests.RequestException | aiohttp.ClientError)


def test_tls_to_a_plain_http_server_is_tried_once_and_says_what_to_check(
    emulator: DropboxSignEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    client: Client,
) -> None:
    # A host without a scheme means https://: here, to the emulator, which speaks plain HTTP.
    host = emulator.url.split("://")[1]
    conn_id = set_connection(monkeypatch, "ds_no_scheme", host=host, password=SECRET_API_KEY)
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    with pytest.raises(DropboxSignTLSError) as raised:
        # The default retry policy, whose five retries took 23 s before this was fixed.
        client(conn_id).get(UNKNOWN_ID)
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert raised.value.status_code is None
    assert f"TLS handshake with {host} failed" in message
    assert "https://" in message
    assert "CA bundle" in message
    assert "retrying" not in caplog.text
    assert elapsed < 2.0


def test_a_body_over_the_cap_is_refused_and_not_retried(
    emulator: DropboxSignEmulator, key_conn: str, client: Client
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    # Exactly the cap is still read: a cancel answered by {} after that much white space.
    emulator.add_odd_answers(OddAnswer(200, body=b" " * (MAX_RESPONSE_BYTES - 2) + b"{}", method="POST"))
    assert client(key_conn, retry_policy=FAST).cancel(sr_id) is None

    emulator.add_odd_answers(OddAnswer(200, body=b"x" * (11 * 2**20), times=3))
    with pytest.raises(DropboxSignResponseTooLargeError) as raised:
        client(key_conn, retry_policy=FAST).get(sr_id)
    error = raised.value
    assert (error.status_code, error.error_name) == (200, "response_too_large")
    assert str(MAX_RESPONSE_BYTES) in error.error_msg
    assert statuses(emulator) == [200, 200]  # the cancel, then one GET


# --- secrets -------------------------------------------------------------------------------------


def test_no_secret_reaches_logs_or_errors(
    emulator: DropboxSignEmulator,
    key_conn: str,
    token_conn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    client: Client,
) -> None:
    caplog.set_level(logging.DEBUG)
    sr_ids = make_requests(emulator, 3)
    texts: list[str] = []

    def record(error: BaseException | None) -> None:
        while error is not None:
            texts.extend([str(error), repr(error)])
            error = error.__cause__ or error.__context__

    for conn_id in (key_conn, token_conn):
        hook = client(conn_id, retry_policy=FAST)
        hook.get(sr_ids[0])
        if hook.kind == "sync":  # only the sync hook lists
            list(DropboxSignHook(conn_id, retry_policy=FAST).list_signature_requests(page_size=2))
        emulator.set_fault(error_rate=0.5, drop_rate=0.3, seed=5)
        hook.get(sr_ids[1])
        emulator.set_fault(drop_rate=1.0)
        with pytest.raises(DropboxSignConnectionError) as dropped:
            hook.cancel(sr_ids[2])
        record(dropped.value)
        emulator.clear_faults()
        texts.append(repr(hook.settings()))

    wrong = set_connection(
        monkeypatch, "ds_leak_wrong", host=emulator.base_url, password=SECRET_API_KEY + "-revoked"
    )
    with pytest.raises(DropboxSignUnauthorizedError) as refused:
        client(wrong).get(sr_ids[0])
    record(refused.value)
    if hook.kind == "sync":  # only the sync hook tests a connection
        texts.append(DropboxSignHook(wrong).test_connection()[1])
    both = set_connection(
        monkeypatch,
        "ds_leak_both",
        host=emulator.base_url,
        password=SECRET_API_KEY,
        extra={"access_token": SECRET_ACCESS_TOKEN},
    )
    with pytest.raises(ValueError, match="both") as invalid:
        client(both).get(sr_ids[0])
    record(invalid.value)

    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    assert "retrying" in logs  # the retries were logged, so the check below saw them
    if hook.kind == "sync":
        assert "127.0.0.1" in logs  # and so were the HTTP client's own debug lines
    for text in [logs, *texts]:
        for secret in SECRETS:
            assert secret not in text
