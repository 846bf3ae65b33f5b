"""The official Dropbox Sign SDK (``dropbox_sign``) works against the emulator unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from dropbox_sign.api.account_api import AccountApi
from dropbox_sign.api.signature_request_api import SignatureRequestApi
from dropbox_sign.api_client import ApiClient
from dropbox_sign.configuration import Configuration
from dropbox_sign.exceptions import ApiException

from dropbox_sign_provider.testing import DropboxSignEmulator

CANCEL_DELAY = 0.15


@pytest.fixture
def emu() -> Iterator[DropboxSignEmulator]:
    with DropboxSignEmulator(
        cancel_delay=CANCEL_DELAY, account_id="ab" * 20, email="ops@example.com"
    ) as emulator:
        yield emulator


@pytest.fixture
def client(emu: DropboxSignEmulator) -> Iterator[ApiClient]:
    with ApiClient(Configuration(username="test-key", host=emu.base_url)) as api_client:
        yield api_client


@pytest.fixture
def api(client: ApiClient) -> SignatureRequestApi:
    return SignatureRequestApi(client)


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def test_account_get(client: ApiClient) -> None:
    account = AccountApi(client).account_get().account
    assert account.account_id == "ab" * 20
    assert account.email_address == "ops@example.com"
    assert account.quotas is not None
    assert account.quotas.api_signature_requests_left == 1250


def test_bearer_token(emu: DropboxSignEmulator) -> None:
    with ApiClient(Configuration(access_token="test-token", host=emu.base_url)) as api_client:
        assert AccountApi(api_client).account_get().account.account_id == "ab" * 20
    with (
        ApiClient(Configuration(access_token="wrong", host=emu.base_url)) as api_client,
        pytest.raises(ApiException) as raised,
    ):
        AccountApi(api_client).account_get()
    assert raised.value.status == 401


def test_get_parses_every_field(emu: DropboxSignEmulator, api: SignatureRequestApi) -> None:
    created = emu.create_signature_request(
        title="NDA",
        subject="Please sign",
        metadata={"customer": "acme"},
        created_at=1_700_000_000,
        expires_at=int(time.time()) + 86_400,
        signers=[
            ("Ann", "ann@example.com"),
            {"name": "Bob", "email": "bob@example.com", "status_code": "signed"},
        ],
    )
    got = api.signature_request_get(created["signature_request_id"]).signature_request
    # The SDK leaves null fields out of to_dict(), and 2.0.0 predates the spec's signer_experience;
    # everything else must survive parsing.
    expected = without_nulls(created)
    assert expected.pop("signer_experience") == {"form_view": "disabled"}
    assert got.to_dict() == expected
    assert got.title == "NDA"
    assert got.metadata == {"customer": "acme"}
    assert got.created_at == 1_700_000_000
    assert got.expires_at == created["expires_at"]
    assert got.is_complete is False
    assert got.details_url == f"https://app.hellosign.com/home/manage?guid={created['signature_request_id']}"
    assert got.signatures is not None
    assert [(s.signer_name, s.status_code) for s in got.signatures] == [
        ("Ann", "awaiting_signature"),
        ("Bob", "signed"),
    ]


def test_list_with_query_and_pages(emu: DropboxSignEmulator, api: SignatureRequestApi) -> None:
    for index in range(3):
        emu.create_signature_request(title=f"NDA {index}", created_at=1_700_000_000 + index)
    emu.create_signature_request(title="NDA signed", is_complete=True)
    emu.create_signature_request(title="Lease")
    first = api.signature_request_list(query="title:nda AND complete:false", page_size=2)
    assert first.list_info.num_results == 3
    assert first.list_info.num_pages == 2
    assert first.list_info.page == 1
    assert [item.title for item in first.signature_requests] == ["NDA 2", "NDA 1"]
    second = api.signature_request_list(query="title:nda AND complete:false", page_size=2, page=2)
    assert [item.title for item in second.signature_requests] == ["NDA 0"]
    everything = api.signature_request_list()
    assert everything.list_info.page_size == 20
    assert len(everything.signature_requests) == 5


def test_list_bad_query_raises_400(api: SignatureRequestApi) -> None:
    with pytest.raises(ApiException) as raised:
        api.signature_request_list(query="title:nd*")
    assert raised.value.status == 400
    assert raised.value.data.error.error_name == "bad_request"
    assert "title:nd*" in raised.value.data.error.error_msg


def test_cancel_of_a_received_request_raises_cancel_failed(
    emu: DropboxSignEmulator, api: SignatureRequestApi
) -> None:
    received = emu.create_signature_request(requester_email_address="someone@other.example")
    assert [
        item.signature_request_id
        for item in api.signature_request_list(query="from:other").signature_requests
    ] == [received["signature_request_id"]]
    with pytest.raises(ApiException) as raised:
        api.signature_request_cancel(received["signature_request_id"])
    assert raised.value.status == 400
    assert raised.value.data.error.error_name == "signature_request_cancel_failed"


def test_cancel_then_410(emu: DropboxSignEmulator, api: SignatureRequestApi) -> None:
    request_id = emu.create_signature_request()["signature_request_id"]
    assert api.signature_request_cancel(request_id) is None
    assert api.signature_request_get(request_id).signature_request.signature_request_id == request_id
    time.sleep(CANCEL_DELAY + 0.05)
    with pytest.raises(ApiException) as raised:
        api.signature_request_get(request_id)
    assert raised.value.status == 410
    assert raised.value.data.error.error_name == "deleted"
    assert raised.value.data.error.error_msg == "This resource has been deleted."
    with pytest.raises(ApiException) as again:
        api.signature_request_cancel(request_id)
    assert again.value.status == 410
    assert emu.cancel_calls(request_id) == 2
    assert emu.get_state(request_id) == "canceled"


@pytest.mark.parametrize(
    ("fields", "status", "error_name"),
    [
        ({"is_complete": True}, 400, "bad_request"),
        ({"forbidden": True}, 403, "forbidden"),
        (None, 404, "not_found"),
    ],
    ids=["completed", "forbidden", "unknown"],
)
def test_cancel_errors_are_parsed(
    emu: DropboxSignEmulator,
    api: SignatureRequestApi,
    fields: dict[str, bool] | None,
    status: int,
    error_name: str,
) -> None:
    request_id = (
        "0" * 40 if fields is None else emu.create_signature_request(**fields)["signature_request_id"]
    )
    with pytest.raises(ApiException) as raised:
        api.signature_request_cancel(request_id)
    assert raised.value.status == status
    assert raised.value.data.error.error_name == error_name


def test_remove_completed(emu: DropboxSignEmulator, api: SignatureRequestApi) -> None:
    request_id = emu.create_signature_request(is_complete=True)["signature_request_id"]
    assert api.signature_request_remove(request_id) is None
    with pytest.raises(ApiException) as raised:
        api.signature_request_get(request_id)
    assert raised.value.status == 410


def test_rate_limit_429_is_parsed(emu: DropboxSignEmulator, api: SignatureRequestApi) -> None:
    emu.set_fault(rate_limit_storm=1.0)
    with pytest.raises(ApiException) as raised:
        api.signature_request_list()
    assert raised.value.status == 429
    assert raised.value.data.error.error_name == "exceeded_rate"
    assert raised.value.headers is not None
    assert raised.value.headers["X-RateLimit-Remaining"] == "0"
