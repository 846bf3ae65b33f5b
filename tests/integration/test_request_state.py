"""The one decision function, fed with what the emulator really answers over loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from dropbox_sign_provider.cancellation.state import RequestState, request_state
from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignConflictError,
    DropboxSignDeletedError,
    DropboxSignError,
    DropboxSignNotFoundError,
    DropboxSignPaymentRequiredError,
)
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import connection_uri_json

S = RequestState


def answer_of(call: Callable[[], Any]) -> Any:
    """What a hook call answered: its result, or the typed error it raised."""
    try:
        return call()
    except DropboxSignError as error:
        return error


@pytest.fixture
def hook(dropbox_sign_conn: str) -> DropboxSignHook:
    # No retries: a fault must reach the decision function as the API answered it.
    return DropboxSignHook(dropbox_sign_conn, retry_policy=RetryPolicy(max_retries=0))


def test_successful_cancel_is_cancel_requested(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> None:
    sr_id = emulator.create_signature_request()["signature_request_id"]
    assert request_state(answer_of(lambda: hook.cancel_signature_request(sr_id))) is S.CANCEL_REQUESTED
    assert emulator.get_state(sr_id) == "cancel_requested"


def test_conflict_is_cancel_requested(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> None:
    sr_id = emulator.create_signature_request()["signature_request_id"]
    emulator.set_fault(error_rate=1.0, error_statuses=(409,))
    error = answer_of(lambda: hook.cancel_signature_request(sr_id))
    assert isinstance(error, DropboxSignConflictError)
    assert error.status_code == 409
    assert request_state(error) is S.CANCEL_REQUESTED


def test_pending_then_canceled_once_the_cancellation_took_effect(
    emulator: DropboxSignEmulator, hook: DropboxSignHook
) -> None:
    sr_id = emulator.create_signature_request()["signature_request_id"]
    assert request_state(answer_of(lambda: hook.get_signature_request(sr_id))) is S.PENDING
    hook.cancel_signature_request(sr_id)
    # Queued but not done yet: the request still answers, out for signature.
    assert request_state(answer_of(lambda: hook.get_signature_request(sr_id))) is S.PENDING
    emulator_wait_for_state(emulator, sr_id, "canceled")
    gone = answer_of(lambda: hook.get_signature_request(sr_id))
    assert isinstance(gone, DropboxSignDeletedError)
    assert gone.status_code == 410
    assert request_state(gone) is S.CANCELED


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"is_complete": True}, S.COMPLETED),
        ({"is_declined": True}, S.DECLINED),
        ({"forbidden": True}, S.FORBIDDEN),
        ({}, S.PENDING),
    ],
)
def test_get_answers(
    emulator: DropboxSignEmulator, hook: DropboxSignHook, fields: dict[str, Any], expected: RequestState
) -> None:
    sr_id = emulator.create_signature_request(**fields)["signature_request_id"]
    assert request_state(answer_of(lambda: hook.get_signature_request(sr_id))) is expected


def test_unknown_id_is_not_found(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> None:
    error = answer_of(lambda: hook.get_signature_request("ab" * 20))
    assert isinstance(error, DropboxSignNotFoundError)
    assert request_state(error) is S.NOT_FOUND


def test_refused_credentials_are_unauthorized(
    emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DS_WRONG_KEY", connection_uri_json(emulator.base_url, api_key="nope"))
    sr_id = emulator.create_signature_request()["signature_request_id"]
    error = answer_of(
        lambda: DropboxSignHook(
            "ds_wrong_key", retry_policy=RetryPolicy(max_retries=0)
        ).get_signature_request(sr_id)
    )
    assert isinstance(error, DropboxSignError)
    assert error.status_code == 401
    assert request_state(error) is S.UNAUTHORIZED


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ({"rate_limit_storm": 1.0}, 429),
        ({"error_rate": 1.0, "error_statuses": (500,)}, 500),
        ({"error_rate": 1.0, "error_statuses": (502,)}, 502),
        ({"error_rate": 1.0, "error_statuses": (503,)}, 503),
        ({"drop_rate": 1.0}, None),
        ({"malformed_rate": 1.0}, 200),
    ],
    ids=["429", "500", "502-html", "503-html", "dropped", "malformed"],
)
def test_no_verdict_answers_are_transient(
    emulator: DropboxSignEmulator, hook: DropboxSignHook, fault: dict[str, Any], status: int | None
) -> None:
    sr_id = emulator.create_signature_request()["signature_request_id"]
    emulator.set_fault(**fault)
    for call in (lambda: hook.get_signature_request(sr_id), lambda: hook.cancel_signature_request(sr_id)):
        error = answer_of(call)
        assert isinstance(error, DropboxSignError)
        assert error.status_code == status
        assert request_state(error) is S.TRANSIENT
    # A cancel lost in front of the API changed nothing.
    assert emulator.get_state(sr_id) == "awaiting_signature"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, DropboxSignBadRequestError), (402, DropboxSignPaymentRequiredError), (405, DropboxSignError)],
)
def test_unexpected_errors_raise(
    emulator: DropboxSignEmulator, hook: DropboxSignHook, status: int, error_type: type[DropboxSignError]
) -> None:
    sr_id = emulator.create_signature_request()["signature_request_id"]
    emulator.set_fault(error_rate=1.0, error_statuses=(status,))
    error = answer_of(lambda: hook.get_signature_request(sr_id))
    assert type(error) is error_type
    with pytest.raises(error_type) as raised:
        request_state(error)
    assert raised.value is error


def test_cancel_of_a_completed_request_is_a_problem_not_a_state(
    emulator: DropboxSignEmulator, hook: DropboxSignHook
) -> None:
    # The refusal (400) says nothing of the state: callers ask GET, which does.
    sr_id = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    refused = answer_of(lambda: hook.cancel_signature_request(sr_id))
    assert isinstance(refused, DropboxSignBadRequestError)
    with pytest.raises(DropboxSignBadRequestError):
        request_state(refused)
    assert request_state(answer_of(lambda: hook.get_signature_request(sr_id))) is S.COMPLETED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (410, S.CANCELED),
        (404, S.NOT_FOUND),
        (403, S.FORBIDDEN),
        (409, S.CANCEL_REQUESTED),
        (429, S.TRANSIENT),
    ],
)
def test_the_status_decides_not_the_message(
    emulator: DropboxSignEmulator, hook: DropboxSignHook, status: int, expected: RequestState
) -> None:
    # The emulator's injected errors say "Injected <status> fault." whatever the status.
    sr_id = emulator.create_signature_request()["signature_request_id"]
    emulator.set_fault(error_rate=1.0, error_statuses=(status,))
    error = answer_of(lambda: hook.get_signature_request(sr_id))
    assert isinstance(error, DropboxSignError)
    assert "deleted" not in error.error_msg
    assert request_state(error) is expected
    # The same status with another status's words still decides the same way.
    for misleading in ("This resource has been deleted.", "Not found.", "Unauthorized user."):
        disguised = type(error)(status, error.error_name, misleading, method="GET", path=error.path)
        assert request_state(disguised) is expected
    disguised_400 = DropboxSignBadRequestError(400, "deleted", "This resource has been deleted.")
    with pytest.raises(DropboxSignBadRequestError):
        request_state(disguised_400)


def test_documented_fields_decide(emulator: DropboxSignEmulator, hook: DropboxSignHook) -> None:
    # A signer's status alone is not completion: is_complete is the documented flag.
    sr_id = emulator.create_signature_request(
        signers=[{"name": "A", "email": "a@example.com", "status_code": "signed"}, ("B", "b@example.com")]
    )["signature_request_id"]
    body = hook.get_signature_request(sr_id)
    assert body["signatures"][0]["status_code"] == "signed"
    assert request_state(body) is S.PENDING


def test_an_expired_request_is_expired_and_its_cancel_a_problem_not_a_state(
    emulator: DropboxSignEmulator, hook: DropboxSignHook
) -> None:
    sr_id = emulator.create_signature_request(expires_at=int(time.time()) - 60)["signature_request_id"]
    body = hook.get_signature_request(sr_id)
    # Dropbox Sign shows the open signatures as expired; the state says there is nothing to cancel.
    assert {s["status_code"] for s in body["signatures"]} == {"expired"}
    assert request_state(body) is S.EXPIRED
    refused = answer_of(lambda: hook.cancel_signature_request(sr_id))
    assert isinstance(refused, DropboxSignBadRequestError)
    assert refused.error_name == "signature_request_expired"
    with pytest.raises(DropboxSignBadRequestError):
        request_state(refused)


@pytest.mark.parametrize(
    ("fields", "now", "expected"),
    [
        ({"expires_at": 1_000}, 999.0, S.PENDING),
        ({"expires_at": 1_000}, 1_000.0, S.EXPIRED),
        ({"expires_at": None}, 10.0**12, S.PENDING),
        # Dropbox Sign's own word wins over the clock: an open signature it already shows as expired.
        ({"expires_at": 1_000, "signatures": [{"status_code": "expired"}]}, 0.0, S.EXPIRED),
        ({"expires_at": 1_000, "is_complete": True}, 2_000.0, S.COMPLETED),
        ({"expires_at": 1_000, "is_declined": True}, 2_000.0, S.DECLINED),
    ],
)
def test_expiry_is_decided_at_the_instant(fields: dict[str, Any], now: float, expected: RequestState) -> None:
    assert request_state({"is_complete": False, "is_declined": False, **fields}, now) is expected


def emulator_wait_for_state(
    emulator: DropboxSignEmulator, sr_id: str, state: str, timeout: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout
    while emulator.get_state(sr_id) != state:
        assert time.monotonic() < deadline, f"{sr_id} never reached {state}"
        time.sleep(0.02)


def test_a_request_one_signer_of_two_signed_is_pending_until_the_last_signs(
    emulator: DropboxSignEmulator, hook: DropboxSignHook
) -> None:
    # Dropbox Sign sends signature_request_signed for each signer: only is_complete says all signed.
    signers = [("A", "a@example.com"), ("B", "b@example.com")]
    sr_id = emulator.create_signature_request(signers=signers)["signature_request_id"]
    emulator.sign(sr_id, signer=0)
    partly = hook.get_signature_request(sr_id)
    assert [s["status_code"] for s in partly["signatures"]] == ["signed", "awaiting_signature"]
    assert request_state(partly) is S.PENDING
    emulator.sign(sr_id, signer=1)
    assert request_state(hook.get_signature_request(sr_id)) is S.COMPLETED
