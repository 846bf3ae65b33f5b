"""Every kind of answer the emulator gives validates against the official Dropbox Sign OpenAPI spec."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_schema_validator import OAS30Validator

from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.helpers import Receiver

DATA = Path(__file__).parent.parent / "data" / "dropbox-sign"
OFFICIAL_ORIGIN = ("https", "api.hellosign.com")
KEY = ("test-key", "")
CANCEL_DELAY = 0.1


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with (DATA / "openapi.yaml").open(encoding="utf-8") as handle:
        # The C loader parses the 550 kB spec several times faster; both are safe loaders.
        loaded: dict[str, Any] = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    return loaded


@pytest.fixture(scope="module")
def strict(spec: dict[str, Any]) -> OpenAPI:
    """The spec, refusing any property it does not declare (catches invented or misspelt fields)."""
    return OpenAPI.from_dict(spec, config=Config(additional_properties_default_policy="forbid"))


@pytest.fixture(scope="module")
def lenient(spec: dict[str, Any]) -> OpenAPI:
    """The spec as written (OpenAPI 3.0 allows undeclared properties unless told otherwise)."""
    return OpenAPI.from_dict(spec)


@pytest.fixture(scope="module")
def strict_components(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's components, each object schema refusing properties it does not declare."""
    components: dict[str, Any] = _forbid_extra(spec["components"])
    return components


@pytest.fixture
def emu() -> Iterator[DropboxSignEmulator]:
    with DropboxSignEmulator(cancel_delay=CANCEL_DELAY) as emulator:
        yield emulator


def call(emulator: DropboxSignEmulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("auth", KEY)
    return requests.request(method, emulator.base_url + path, timeout=10, **kwargs)


def validate(openapi: OpenAPI, response: requests.Response) -> None:
    """Validate as if the call had gone to the spec's server, https://api.hellosign.com/v3."""
    prepared = response.request.copy()
    assert prepared.url is not None
    parts = urlsplit(prepared.url)
    prepared.url = urlunsplit((*OFFICIAL_ORIGIN, parts.path, parts.query, parts.fragment))
    openapi.validate_response(RequestsOpenAPIRequest(prepared), RequestsOpenAPIResponse(response))


def created_id(emulator: DropboxSignEmulator, **fields: Any) -> str:
    return str(emulator.create_signature_request(**fields)["signature_request_id"])


def canceled_id(emulator: DropboxSignEmulator) -> str:
    request_id = created_id(emulator)
    assert call(emulator, "POST", f"/signature_request/cancel/{request_id}").status_code == 200
    time.sleep(CANCEL_DELAY + 0.05)
    return request_id


def _get_cancel_requested(emulator: DropboxSignEmulator) -> requests.Response:
    request_id = created_id(emulator)
    assert call(emulator, "POST", f"/signature_request/cancel/{request_id}").status_code == 200
    return call(emulator, "GET", f"/signature_request/{request_id}")


def _list(emulator: DropboxSignEmulator, params: dict[str, Any]) -> requests.Response:
    created_id(emulator, title="NDA one", metadata={"customer": "acme"})
    created_id(emulator, title="NDA two", is_complete=True)
    created_id(emulator, title="Lease", is_declined=True)
    response = call(emulator, "GET", "/signature_request/list", params=params)
    assert response.json()["signature_requests"], response.text
    return response


def job_id(emulator: DropboxSignEmulator, count: int = 3) -> str:
    return str(
        emulator.create_bulk_send_job(count, metadata={"batch": 7})["bulk_send_job"]["bulk_send_job_id"]
    )


def _list_with_jobs(emulator: DropboxSignEmulator, path: str, params: dict[str, Any]) -> requests.Response:
    job_id(emulator)
    job_id(emulator, 1)
    response = call(emulator, "GET", path, params=params)
    member = "bulk_send_jobs" if path.startswith("/bulk_send_job") else "signature_requests"
    assert response.json()[member], response.text
    return response


def _storm(emulator: DropboxSignEmulator) -> requests.Response:
    emulator.set_fault(rate_limit_storm=1.0)
    return call(emulator, "POST", f"/signature_request/cancel/{created_id(emulator)}")


def _send(emulator: DropboxSignEmulator, extra: dict[str, str], **kwargs: Any) -> requests.Response:
    form = {
        "test_mode": "1",
        "title": "NDA",
        "signers[0][name]": "Ann",
        "signers[0][email_address]": "ann@example.com",
        "metadata[run]": "7",
    }
    files = {"files[0]": ("nda.txt", b"Please sign.", "text/plain")}
    return call(emulator, "POST", "/signature_request/send", data=form | extra, files=files, **kwargs)


Scenario = Callable[[DropboxSignEmulator], requests.Response]

SCENARIOS: dict[str, tuple[int, Scenario]] = {
    "get-awaiting": (200, lambda e: call(e, "GET", f"/signature_request/{created_id(e)}")),
    "get-completed": (
        200,
        lambda e: call(
            e, "GET", f"/signature_request/{created_id(e, is_complete=True, metadata={'a': 'b'})}"
        ),
    ),
    "get-declined": (
        200,
        lambda e: call(
            e,
            "GET",
            f"/signature_request/{created_id(e, is_declined=True, signers=[('A', 'a@x'), ('B', 'b@x')])}",
        ),
    ),
    "get-expired": (
        200,
        lambda e: call(e, "GET", f"/signature_request/{created_id(e, expires_at=int(time.time()) - 5)}"),
    ),
    "get-cancel-requested": (200, lambda e: _get_cancel_requested(e)),
    "list": (200, lambda e: _list(e, {})),
    "list-query": (
        200,
        lambda e: _list(
            e, {"query": "title:nda AND complete:false AND created:[2000-01-01 TO *]", "page_size": 1}
        ),
    ),
    "list-empty": (200, lambda e: call(e, "GET", "/signature_request/list", params={"page": 3})),
    "list-with-a-job": (200, lambda e: _list_with_jobs(e, "/signature_request/list", {})),
    "cancel": (200, lambda e: call(e, "POST", f"/signature_request/cancel/{created_id(e)}")),
    # GET /bulk_send_job/{id} with requests is checked by test_bulk_send_job_matches_the_spec.
    "bulk-send-job-empty-page": (
        200,
        lambda e: call(e, "GET", f"/bulk_send_job/{job_id(e)}", params={"page": 2, "page_size": 3}),
    ),
    "bulk-send-job-list": (200, lambda e: _list_with_jobs(e, "/bulk_send_job/list", {"page_size": 1})),
    "bulk-send-job-list-empty": (200, lambda e: call(e, "GET", "/bulk_send_job/list")),
    "400-bulk-send-job-page-size": (
        400,
        lambda e: call(e, "GET", f"/bulk_send_job/{job_id(e)}", params={"page_size": 101}),
    ),
    "400-bulk-send-job-list-page-size": (
        400,
        lambda e: call(e, "GET", "/bulk_send_job/list", params={"page_size": 0}),
    ),
    "401-bulk-send-job": (401, lambda e: call(e, "GET", f"/bulk_send_job/{job_id(e)}", auth=None)),
    "401-bulk-send-job-list": (401, lambda e: call(e, "GET", "/bulk_send_job/list", auth=("nope", ""))),
    "404-bulk-send-job": (404, lambda e: call(e, "GET", "/bulk_send_job/0123456789abcdef")),
    "remove": (
        200,
        lambda e: call(e, "POST", f"/signature_request/remove/{created_id(e, is_complete=True)}"),
    ),
    "400-cancel-completed": (
        400,
        lambda e: call(e, "POST", f"/signature_request/cancel/{created_id(e, is_complete=True)}"),
    ),
    "400-cancel-declined": (
        400,
        lambda e: call(e, "POST", f"/signature_request/cancel/{created_id(e, is_declined=True)}"),
    ),
    "400-remove-incomplete": (400, lambda e: call(e, "POST", f"/signature_request/remove/{created_id(e)}")),
    "400-page-size": (400, lambda e: call(e, "GET", "/signature_request/list", params={"page_size": 101})),
    "400-query": (400, lambda e: call(e, "GET", "/signature_request/list", params={"query": "nda OR x*"})),
    "list-received": (
        200,
        lambda e: (
            created_id(e, requester_email_address="someone@other.example"),
            call(e, "GET", "/signature_request/list", params={"query": "to:me OR from:other"}),
        )[1],
    ),
    "400-cancel-received": (
        400,
        lambda e: call(
            e,
            "POST",
            f"/signature_request/cancel/{created_id(e, requester_email_address='someone@other.example')}",
        ),
    ),
    "401-account": (401, lambda e: call(e, "GET", "/account", auth=None)),
    "401-get": (401, lambda e: call(e, "GET", f"/signature_request/{created_id(e)}", auth=("nope", ""))),
    "401-list": (401, lambda e: call(e, "GET", "/signature_request/list", auth=None)),
    "401-cancel": (401, lambda e: call(e, "POST", f"/signature_request/cancel/{created_id(e)}", auth=None)),
    "403-get": (403, lambda e: call(e, "GET", f"/signature_request/{created_id(e, forbidden=True)}")),
    "403-cancel": (
        403,
        lambda e: call(e, "POST", f"/signature_request/cancel/{created_id(e, forbidden=True)}"),
    ),
    "404-get": (404, lambda e: call(e, "GET", "/signature_request/0123456789abcdef")),
    "404-cancel": (404, lambda e: call(e, "POST", "/signature_request/cancel/0123456789abcdef")),
    "410-get": (410, lambda e: call(e, "GET", f"/signature_request/{canceled_id(e)}")),
    "410-cancel": (410, lambda e: call(e, "POST", f"/signature_request/cancel/{canceled_id(e)}")),
    "429-storm": (429, _storm),
    "400-account-update-url": (400, lambda e: call(e, "PUT", "/account", json={"callback_url": "nope"})),
    "400-account-update-remote-url": (
        400,
        lambda e: call(e, "PUT", "/account", json={"callback_url": "https://example.com/events"}),
    ),
    "400-account-update-field": (400, lambda e: call(e, "PUT", "/account", json={"callbak_url": "x"})),
    "401-account-update": (401, lambda e: call(e, "PUT", "/account", json={}, auth=None)),
    "send": (200, lambda e: _send(e, {})),
    "400-send-field": (400, lambda e: _send(e, {"cc_email_addresses[0]": "c@example.com"})),
    "401-send": (401, lambda e: _send(e, {}, auth=None)),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_answer_matches_the_spec(name: str, emu: DropboxSignEmulator, strict: OpenAPI) -> None:
    status, scenario = SCENARIOS[name]
    response = scenario(emu)
    assert response.status_code == status, response.text
    validate(strict, response)


@pytest.mark.parametrize(
    "update",
    [None, {"callback_url": "https://localhost/events"}, {"callback_url": "", "locale": "de-DE"}],
)
def test_account_matches_the_spec(
    emu: DropboxSignEmulator, lenient: OpenAPI, spec: dict[str, Any], update: dict[str, Any] | None
) -> None:
    if update is None:
        response = call(emu, "GET", "/account")
    else:
        response = call(emu, "PUT", "/account", json=update)
        assert response.json()["account"]["callback_url"] == (update["callback_url"] or None)
    assert response.status_code == 200
    validate(lenient, response)
    # The official AccountGetResponse example (our template) carries quotas.sms_signatures_left,
    # which the schema does not declare: the only undeclared field the emulator sends.
    schemas = spec["components"]["schemas"]
    account = response.json()["account"]
    assert set(account) <= set(schemas["AccountResponse"]["properties"])
    assert set(account["quotas"]) - {"sms_signatures_left"} <= set(
        schemas["AccountResponseQuotas"]["properties"]
    )


@pytest.mark.parametrize("params", [{}, {"page_size": 2}, {"page": 2, "page_size": 2}])
def test_bulk_send_job_matches_the_spec(
    emu: DropboxSignEmulator, lenient: OpenAPI, strict_components: dict[str, Any], params: dict[str, Any]
) -> None:
    # The job's requests are an allOf (SignatureRequestResponse and two of its own fields), which a
    # validator that forbids undeclared properties refuses whatever the answer: each branch declares
    # the other's fields undeclared. So the whole answer is checked as the spec is written, and its
    # parts strictly: the job and list_info, and each request as a SignatureRequestResponse (which
    # declares bulk_send_job_id and metadata too).
    response = call(emu, "GET", f"/bulk_send_job/{job_id(emu)}", params=params)
    assert response.status_code == 200, response.text
    validate(lenient, response)
    body = response.json()
    assert body["signature_requests"]
    _strict_schema(strict_components, "BulkSendJobGetResponse").validate({**body, "signature_requests": []})
    for signature_request in body["signature_requests"]:
        _strict_schema(strict_components, "SignatureRequestResponse").validate(signature_request)
        assert signature_request["bulk_send_job_id"] == body["bulk_send_job"]["bulk_send_job_id"]


def test_the_strict_parts_catch_an_undeclared_field_in_a_jobs_request(
    emu: DropboxSignEmulator, strict_components: dict[str, Any]
) -> None:
    body = call(emu, "GET", f"/bulk_send_job/{job_id(emu, 1)}").json()
    signature_request = body["signature_requests"][0]
    _strict_schema(strict_components, "SignatureRequestResponse").validate(signature_request)
    with pytest.raises(Exception, match="invented_field"):
        _strict_schema(strict_components, "SignatureRequestResponse").validate(
            signature_request | {"invented_field": 1}
        )
    with pytest.raises(Exception, match="invented_field"):
        _strict_schema(strict_components, "BulkSendJobGetResponse").validate(
            {**body, "signature_requests": [], "bulk_send_job": body["bulk_send_job"] | {"invented_field": 1}}
        )


def _strict_schema(components: dict[str, Any], name: str) -> OAS30Validator:
    """A validator of one component schema, over components that refuse undeclared properties."""
    return OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": components})


def test_429_from_the_budget_matches_the_spec(strict: OpenAPI) -> None:
    with DropboxSignEmulator(rate_limit=1) as emulator:
        assert call(emulator, "GET", "/signature_request/list").status_code == 200
        response = call(emulator, "GET", "/signature_request/list")
        assert response.status_code == 429
        validate(strict, response)


def test_the_validator_catches_a_broken_answer(emu: DropboxSignEmulator, strict: OpenAPI) -> None:
    emu.set_fault(malformed_rate=1.0)
    malformed = call(emu, "GET", f"/signature_request/{created_id(emu)}")
    assert malformed.status_code == 200
    with pytest.raises(Exception, match=r"(?i)deserial|json|decod"):
        validate(strict, malformed)


def test_the_validator_catches_an_undeclared_field(emu: DropboxSignEmulator, strict: OpenAPI) -> None:
    response = call(emu, "GET", f"/signature_request/{created_id(emu)}")
    validate(strict, response)
    body = response.json()
    body["signature_request"]["signatures"][0]["invented_field"] = 1
    response._content = json.dumps(body).encode()
    with pytest.raises(Exception, match="invented_field"):
        validate(strict, response)


def test_rate_limit_headers_are_declared_integers(emu: DropboxSignEmulator, spec: dict[str, Any]) -> None:
    response = call(emu, "GET", "/signature_request/list")
    headers = spec["components"]["headers"]
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-Ratelimit-Reset"):
        assert headers[name]["schema"]["type"] == "integer"
        assert int(response.headers[name]) >= 0


@pytest.mark.parametrize("trigger", ["cancel", "sign", "decline", "expire", "callback_test"])
def test_callback_event_matches_the_spec(spec: dict[str, Any], receiver: Receiver, trigger: str) -> None:
    with DropboxSignEmulator(cancel_delay=0.05, callback_url=receiver.url) as emulator:
        request_id = created_id(emulator)
        if trigger == "cancel":
            call(emulator, "POST", f"/signature_request/cancel/{request_id}")
        elif trigger == "callback_test":
            emulator.send_callback_test()
        else:
            getattr(emulator, trigger)(request_id)
        event = receiver.wait_for(1)[0].payload()
    validator = OAS30Validator(
        {"$ref": "#/components/schemas/EventCallbackRequest", "components": spec["components"]}
    )
    validator.validate(event)
    # Strict too: no property the spec does not declare, anywhere in the event.
    strict_validator = OAS30Validator(
        {"$ref": "#/components/schemas/EventCallbackRequest", "components": _forbid_extra(spec["components"])}
    )
    strict_validator.validate(event)
    assert list(validator.iter_errors({"event": {"event_type": "signature_request_canceled"}}))
    official = json.loads((DATA / "examples" / "EventCallbackAppSignatureRequestSent.json").read_text())
    if trigger == "callback_test":
        assert set(event) == {"event"}
    else:
        assert event["signature_request"]["signature_request_id"] == request_id
        assert set(event) == set(official)
    assert set(event["event"]) == set(official["event"])
    assert set(official["event"]["event_metadata"]) <= set(event["event"]["event_metadata"])


def _forbid_extra(node: Any) -> Any:
    """A copy of a schema tree in which every object schema refuses undeclared properties."""
    if isinstance(node, list):
        return [_forbid_extra(item) for item in node]
    if not isinstance(node, dict):
        return node
    copied = {key: _forbid_extra(value) for key, value in node.items()}
    if "properties" in copied and "additionalProperties" not in copied:
        copied["additionalProperties"] = False
    return copied
