"""
Id validation (signature requests and bulk send jobs) and the typed errors, on their own (the
hooks' use of them is in test_hook*.py).
"""

from __future__ import annotations

import json
import pickle

import pytest

from dropbox_sign_provider.cancellation.ids import (
    MAX_SHOWN_CHARS,
    SIGNATURE_REQUEST_ID_PATTERN,
    normalize_signature_request_ids,
    resolved_at_run_time,
    validate_bulk_send_job_id,
    validate_signature_request_id,
)
from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignConflictError,
    DropboxSignConnectionError,
    DropboxSignDeletedError,
    DropboxSignError,
    DropboxSignForbiddenError,
    DropboxSignNotFoundError,
    DropboxSignPaymentRequiredError,
    DropboxSignRateLimitError,
    DropboxSignResponseError,
    DropboxSignServerError,
    DropboxSignUnauthorizedError,
    error_from_response,
    parse_json_body,
)
from dropbox_sign_provider.hooks.dropbox_sign import bulk_send_job_path

# Lengths of the ids in Dropbox Sign's own examples, and the ends of the accepted range.
ID_16 = "0123456789abcdef"
ID_24 = "d10338cad145e1cb68afc828"
ID_37 = "a9f4c1d2e3b4a5f6c7d8e9f0a1b2c3d4e5f6a"
ID_40 = "fa5c8a0b0f492d768749333ad6fcc214c111e967"
ID_64 = "f" * 64

#: Values a template, a form or an attacker may hand over instead of an id, each with why it fails.
BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("\t\n", id="whitespace-only"),
    pytest.param("g" * 40, id="non-hex"),
    pytest.param(ID_40.upper(), id="upper-case"),
    pytest.param("0123456789abcde", id="15-chars"),
    pytest.param("f" * 65, id="65-chars"),
    pytest.param("../account", id="dot-dot"),
    pytest.param(f"../{ID_40}", id="dot-dot-before-id"),
    pytest.param(f"{ID_40}/../../account", id="dot-dot-after-id"),
    pytest.param("%2e%2e/account", id="encoded-dot-dot"),
    pytest.param(f"{ID_24}%2F..%2Faccount", id="encoded-slash"),
    pytest.param(f"{ID_24}?page=2", id="query"),
    pytest.param(f"{ID_24}#x", id="fragment"),
    pytest.param(f"{ID_24[:10]}\x00{ID_24[10:]}", id="nul-inside"),
    pytest.param(f"{ID_24}\x00", id="nul-after"),
    pytest.param(f"{ID_24[:5]}\x07{ID_24[5:]}", id="bell-inside"),
    pytest.param(f"{ID_24}\x7f", id="del-after"),
    pytest.param(f"{ID_24[:8]}\r\n{ID_24[8:]}", id="crlf-inside"),
    pytest.param(ID_24.replace("a", "\u0430"), id="cyrillic-a"),
    pytest.param(ID_24.replace("1", "\uff11"), id="fullwidth-digit"),
    pytest.param(ID_24.replace("0", "\u0660"), id="arabic-indic-digit"),
    pytest.param(f"{ID_24[:6]}\u200b{ID_24[6:]}", id="zero-width-space"),
    pytest.param(f"{ID_24} {ID_24}", id="two-ids"),
    pytest.param("{{ params.id }}", id="unrendered-template"),
    pytest.param(None, id="None"),
    pytest.param(12345678901234567890, id="int"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(ID_40.encode(), id="bytes"),
    pytest.param([ID_40], id="list"),
    pytest.param({"signature_request_id": ID_40}, id="dict"),
]


@pytest.mark.parametrize("value", [ID_16, ID_24, ID_37, ID_40, ID_64])
def test_ids_of_every_documented_length_are_accepted(value: str) -> None:
    assert validate_signature_request_id(value) == value


@pytest.mark.parametrize("padding", [" ", "\n", "\t", " \r\n"])
def test_surrounding_whitespace_is_stripped(padding: str) -> None:
    assert validate_signature_request_id(f"{padding}{ID_40}{padding}") == ID_40


@pytest.mark.parametrize("value", BAD_IDS)
def test_anything_else_is_refused_with_the_value_named(value: object) -> None:
    with pytest.raises(ValueError, match="is not a Dropbox Sign id") as raised:
        validate_signature_request_id(value)
    message = str(raised.value)
    assert repr(value) in message
    assert message.endswith(
        "lowercase hex characters" if isinstance(value, str) else f", got {type(value).__name__}"
    )


def test_a_long_bad_value_is_named_cut_to_a_readable_length() -> None:
    # A whole rendered template could be a megabyte, and the message goes to logs and HTTP answers.
    whole, cut = "x" * (MAX_SHOWN_CHARS - 2), "x" * (MAX_SHOWN_CHARS - 1)
    with pytest.raises(ValueError, match="is not a Dropbox Sign id") as raised:
        validate_signature_request_id(whole)
    assert repr(whole) in str(raised.value)
    with pytest.raises(ValueError, match="is not a Dropbox Sign id") as raised:
        validate_signature_request_id(cut)
    shown_cut = f"'{'x' * (MAX_SHOWN_CHARS - 31)}... ({MAX_SHOWN_CHARS + 1} characters)"
    assert str(raised.value).startswith(f"signature_request_id {shown_cut} is not a Dropbox Sign id")


def test_the_published_pattern_agrees_with_the_validator() -> None:
    import re

    pattern = re.compile(SIGNATURE_REQUEST_ID_PATTERN)
    for good in (ID_16, ID_24, ID_40, ID_64):
        assert pattern.match(good)
    for bad in ("0123456789abcde", "f" * 65, ID_40.upper(), "../account"):
        assert not pattern.match(bad)


# --- bulk send job ids ------------------------------------------------------------------------------

#: The bulk_send_job_id of Dropbox Sign's examples (openapi.yaml, BulkSendJobGetResponse).
JOB_ID_40 = "6e683bc0369ba3d5b6f43c2c22a8031dbf6bd174"


@pytest.mark.parametrize("value", [ID_16, ID_24, JOB_ID_40, ID_64])
def test_bulk_send_job_ids_follow_the_rule_of_signature_request_ids(value: str) -> None:
    assert validate_bulk_send_job_id(f" {value}\n") == value
    assert bulk_send_job_path(value) == f"/bulk_send_job/{value}"


@pytest.mark.parametrize("value", BAD_IDS)
def test_a_bad_bulk_send_job_id_is_refused_with_the_value_named(value: object) -> None:
    for check in (validate_bulk_send_job_id, bulk_send_job_path):
        with pytest.raises(ValueError, match="is not a Dropbox Sign bulk send job id") as raised:
            check(value)
        message = str(raised.value)
        assert message.startswith(f"bulk_send_job_id {value!r} ")
        assert message.endswith("characters" if isinstance(value, str) else f", got {type(value).__name__}")


# --- many ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(ID_40, [ID_40], id="one"),
        pytest.param(f"{ID_40},{ID_24}", [ID_40, ID_24], id="comma"),
        pytest.param(f" {ID_40} ,\n{ID_24}\t{ID_16} ", [ID_40, ID_24, ID_16], id="form-text"),
        pytest.param(str([ID_40, ID_24]), [ID_40, ID_24], id="rendered-list"),
        pytest.param(str((ID_24,)), [ID_24], id="rendered-tuple"),
        pytest.param([ID_24, ID_40], [ID_24, ID_40], id="list"),
        pytest.param((ID_24, f" {ID_40}\n"), [ID_24, ID_40], id="tuple"),
        pytest.param(
            [{"signature_request_id": ID_40, "title": "NDA"}, ID_24], [ID_40, ID_24], id="summaries"
        ),
        pytest.param({ID_40: "canceled", ID_24: "cancel_requested"}, [ID_40, ID_24], id="operator-result"),
        pytest.param([ID_40, ID_24, ID_40, f"{ID_24} "], [ID_40, ID_24], id="duplicates"),
    ],
)
def test_many_ids_are_normalised_in_order_without_duplicates(value: object, expected: list[str]) -> None:
    assert normalize_signature_request_ids(value) == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        pytest.param([ID_40, "../account"], "'../account'", id="bad-item-in-list"),
        pytest.param(f"{ID_40},%2e%2e", "'%2e%2e'", id="bad-item-in-text"),
        pytest.param(str([ID_40, 7]), "7", id="int-in-rendered-list"),
        pytest.param("[" + ID_40, repr("[" + ID_40), id="unreadable-list"),
        pytest.param("['x'] + ['y']", repr("['x'] + ['y']"), id="expression"),
        pytest.param([ID_40, "  "], "'  '", id="blank-in-list"),
        pytest.param(None, "None", id="None"),
        pytest.param(42, "42", id="int"),
        pytest.param({ID_40}, repr({ID_40}), id="set"),
        pytest.param("(7)", "'(7)' looks like a list but is not one", id="rendered-number"),
        pytest.param([{"title": "NDA"}], "{'title': 'NDA'}", id="summary-without-id"),
    ],
)
def test_a_bad_value_among_many_is_named(value: object, named: str) -> None:
    with pytest.raises(ValueError, match="signature_request_id") as raised:
        normalize_signature_request_ids(value)
    assert named in str(raised.value)


def test_a_value_of_the_wrong_kind_is_named_with_its_type() -> None:
    with pytest.raises(ValueError, match="must be an id") as raised:
        normalize_signature_request_ids(42)
    assert str(raised.value) == (
        "signature_request_ids 42 must be an id, a list of ids or a mapping keyed by id, got int"
    )


@pytest.mark.parametrize(
    "value",
    [[], (), {}, "", "  ", "\n\t", "[]", "()", "{}", " [ ] "],
    ids=[
        "list",
        "tuple",
        "mapping",
        "text",
        "blank",
        "white-space",
        "rendered-list",
        "rendered-tuple",
        "rendered-mapping",
        "rendered-list-in-blanks",
    ],
)
def test_empty_input_is_no_ids_whatever_its_form(value: object) -> None:
    assert normalize_signature_request_ids(value) == []


@pytest.mark.parametrize(
    ("value", "deferred"),
    [
        pytest.param("{{ params.ids }}", True, id="template"),
        pytest.param("{% for i in x %}{{ i }}{% endfor %}", True, id="statement"),
        pytest.param([ID_40, "{{ ti.xcom_pull('find') }}"], True, id="template-in-list"),
        pytest.param("{% if params.all %}" + ID_40 + "{% endif %}", True, id="statement-only"),
        pytest.param({"{{ params.id }}": "canceled"}, True, id="template-as-key"),
        pytest.param(ID_40, False, id="id"),
        pytest.param([ID_40], False, id="list"),
        pytest.param({ID_40: "canceled"}, False, id="mapping"),
        pytest.param(None, False, id="None"),
        pytest.param(123, False, id="int"),
        pytest.param(1.5, False, id="float"),
        pytest.param(object(), False, id="object"),
    ],
)
def test_what_is_resolved_only_at_run_time(value: object, deferred: bool) -> None:
    assert resolved_at_run_time(value) is deferred


def test_an_xcom_is_resolved_only_at_run_time() -> None:
    from airflow.sdk import DAG, task

    with DAG("d", schedule=None):

        @task
        def find() -> list[str]:
            return []

        found = find()
    assert resolved_at_run_time(found)
    assert resolved_at_run_time([found])


# --- typed errors ----------------------------------------------------------------------------------


def envelope(name: str, msg: str, path: str | None = None) -> bytes:
    error = {"error_name": name, "error_msg": msg}
    if path:
        error["error_path"] = path
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    ("status", "cls", "name"),
    [
        (400, DropboxSignBadRequestError, "bad_request"),
        (401, DropboxSignUnauthorizedError, "unauthorized"),
        (402, DropboxSignPaymentRequiredError, "payment_required"),
        (403, DropboxSignForbiddenError, "forbidden"),
        (404, DropboxSignNotFoundError, "not_found"),
        (409, DropboxSignConflictError, "conflict"),
        (410, DropboxSignDeletedError, "deleted"),
        (429, DropboxSignRateLimitError, "exceeded_rate"),
        (500, DropboxSignServerError, "internal_error"),
        (503, DropboxSignServerError, "service_unavailable"),
    ],
)
def test_each_documented_error_has_its_class(status: int, cls: type[DropboxSignError], name: str) -> None:
    error = error_from_response(
        status,
        envelope(name, f"message for {status}", path="page_size" if status == 400 else None),
        method="POST",
        path=f"/signature_request/cancel/{ID_40}",
    )
    assert type(error) is cls
    assert (error.status_code, error.error_name, error.error_msg) == (status, name, f"message for {status}")
    assert (error.method, error.path) == ("POST", f"/signature_request/cancel/{ID_40}")
    assert error.error_path == ("page_size" if status == 400 else None)
    assert str(error) == (
        f"Dropbox Sign HTTP {status} {name}: message for {status}"
        + (" [parameter: page_size]" if status == 400 else "")
        + f" (POST /signature_request/cancel/{ID_40})"
    )


def test_the_official_examples_map_to_their_classes() -> None:
    from pathlib import Path

    examples = Path(__file__).parent.parent / "data" / "dropbox-sign" / "examples"
    expected = {
        "Error400Response.json": (400, DropboxSignBadRequestError),
        "Error401Response.json": (401, DropboxSignUnauthorizedError),
        "Error402Response.json": (402, DropboxSignPaymentRequiredError),
        "Error403Response.json": (403, DropboxSignForbiddenError),
        "Error404Response.json": (404, DropboxSignNotFoundError),
        "Error409Response.json": (409, DropboxSignConflictError),
        "Error410Response.json": (410, DropboxSignDeletedError),
        "Error429Response.json": (429, DropboxSignRateLimitError),
    }
    for name, (status, cls) in expected.items():
        body = (examples / name).read_bytes()
        error = error_from_response(status, body, method="GET", path="/x")
        documented = json.loads(body)["error"]
        assert type(error) is cls
        assert error.error_name == documented["error_name"]
        assert error.error_msg == documented["error_msg"]


@pytest.mark.parametrize("status", [418, 422, 451])
def test_an_undocumented_client_error_is_still_a_dropbox_sign_error(status: int) -> None:
    error = error_from_response(status, envelope("teapot", "short and stout"), method="GET", path="/x")
    assert type(error) is DropboxSignError
    assert (error.status_code, error.error_name, error.error_msg) == (status, "teapot", "short and stout")


@pytest.mark.parametrize(
    ("status", "body", "cls", "name", "msg"),
    [
        pytest.param(
            502,
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            DropboxSignServerError,
            "server_error",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            id="html-502",
        ),
        pytest.param(404, b"Not Found", DropboxSignNotFoundError, "http_404", "Not Found", id="text-404"),
        pytest.param(
            429, b"", DropboxSignRateLimitError, "http_429", "no error message in the answer", id="empty-429"
        ),
        pytest.param(400, b"[1, 2]", DropboxSignBadRequestError, "http_400", "[1, 2]", id="json-list"),
        pytest.param(
            400,
            b'{"error": "bad"}',
            DropboxSignBadRequestError,
            "http_400",
            '{"error": "bad"}',
            id="flat-error",
        ),
        pytest.param(
            500,
            b'{"error": {}}',
            DropboxSignServerError,
            "server_error",
            '{"error": {}}',
            id="empty-envelope",
        ),
    ],
)
def test_an_answer_that_is_not_the_envelope_is_still_typed(
    status: int, body: bytes, cls: type[DropboxSignError], name: str, msg: str
) -> None:
    error = error_from_response(status, body, method="GET", path="/account")
    assert type(error) is cls
    assert (error.status_code, error.error_name, error.error_msg) == (status, name, msg)
    assert (error.method, error.path) == ("GET", "/account")


def test_a_long_body_is_cut_in_the_message() -> None:
    body = ("x" * 1000).encode()
    error = error_from_response(503, body, method="GET", path="/account")
    assert error.error_msg == "x" * 200 + "..."


def test_an_undecodable_body_does_not_break_the_error() -> None:
    error = error_from_response(500, b"\xff\xfe broken", method="GET", path="/account")
    assert type(error) is DropboxSignServerError
    assert "broken" in error.error_msg


def test_errors_survive_pickling_with_every_field() -> None:
    original = DropboxSignRateLimitError(
        429,
        "exceeded_rate",
        "Too many requests.",
        error_path="x",
        method="POST",
        path=f"/signature_request/cancel/{ID_40}",
        retry_after=12.5,
    )
    # Airflow pickles a task's exception to move it between processes.
    copy = pickle.loads(pickle.dumps(original))  # noqa: S301
    assert type(copy) is DropboxSignRateLimitError
    assert vars(copy) == vars(original)
    assert str(copy) == str(original)


def test_repr_names_the_class_and_the_request() -> None:
    error = DropboxSignDeletedError(
        410, "deleted", "This resource has been deleted.", method="GET", path=f"/signature_request/{ID_24}"
    )
    assert repr(error) == (
        "DropboxSignDeletedError(status_code=410, error_name='deleted', "
        f"error_msg='This resource has been deleted.', method='GET', path='/signature_request/{ID_24}')"
    )


def test_an_error_without_an_answer_says_so() -> None:
    error = DropboxSignConnectionError(
        None, "connection_error", "ConnectionResetError", method="GET", path="/a"
    )
    assert str(error) == "Dropbox Sign connection_error: ConnectionResetError (GET /a)"
    assert error.status_code is None


@pytest.mark.parametrize(
    "cls",
    [
        DropboxSignBadRequestError,
        DropboxSignUnauthorizedError,
        DropboxSignPaymentRequiredError,
        DropboxSignForbiddenError,
        DropboxSignNotFoundError,
        DropboxSignConflictError,
        DropboxSignDeletedError,
        DropboxSignRateLimitError,
        DropboxSignServerError,
        DropboxSignConnectionError,
        DropboxSignResponseError,
    ],
)
def test_every_error_is_caught_by_the_base_class(cls: type[DropboxSignError]) -> None:
    with pytest.raises(DropboxSignError):
        raise cls(None, "x", "y")


# --- successful answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", {}),
        (b"  \n", {}),
        (b"{}", {}),
        (b'{"signature_request": {"title": "NDA"}}', {"signature_request": {"title": "NDA"}}),
    ],
)
def test_a_successful_answer_reads_as_its_json_object(body: bytes, expected: dict[str, object]) -> None:
    assert parse_json_body(200, body, method="POST", path="/x") == expected


@pytest.mark.parametrize(
    "body", [b'{"signature_request": {"signature_request_id": "', b"[]", b'"ok"', b"<html>ok</html>", b"null"]
)
def test_a_successful_answer_that_is_not_a_json_object_is_a_response_error(body: bytes) -> None:
    with pytest.raises(DropboxSignResponseError) as raised:
        parse_json_body(200, body, method="GET", path="/signature_request/list")
    error = raised.value
    assert (error.status_code, error.error_name) == (200, "invalid_response")
    assert (error.method, error.path) == ("GET", "/signature_request/list")
    assert body.decode()[:20] in error.error_msg


def test_a_rendered_mapping_reads_as_its_ids() -> None:
    # What "{{ ti.xcom_pull('cancel') }}" renders the operator's result to.
    rendered = str({"a" * 40: "cancel_requested", "b" * 40: "completed"})
    assert normalize_signature_request_ids(rendered) == ["a" * 40, "b" * 40]
    with pytest.raises(ValueError, match="not a Dropbox Sign id"):
        normalize_signature_request_ids(str({"../account": "cancel_requested"}))


@pytest.mark.parametrize(
    ("status", "error_name", "error_type"),
    [
        (403, "exceeded_rate", "DropboxSignRateLimitError"),
        (400, "exceeded_rate", "DropboxSignRateLimitError"),
        (503, "maintenance", "DropboxSignServerError"),
        (400, "unavailable", "DropboxSignServerError"),
        (400, "signature_request_cancel_failed", "DropboxSignBadRequestError"),
    ],
)
def test_an_error_name_more_specific_than_its_status_decides(
    status: int, error_name: str, error_type: str
) -> None:
    import json

    from dropbox_sign_provider import exceptions
    from dropbox_sign_provider.exceptions import error_from_response

    body = json.dumps({"error": {"error_msg": "m", "error_name": error_name}}).encode()
    error = error_from_response(status, body, method="POST", path="/signature_request/cancel/ab")
    assert type(error) is getattr(exceptions, error_type)
    assert (error.status_code, error.error_name) == (status, error_name)
