"""
The callback receiver end to end: HTTP requests to the plugin's app, and what they leave in a real
Airflow metadata database (the board Variable, asset events, the asset queue of a scheduled DAG).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dropbox_sign_provider.events.assets import event_asset_uri
from dropbox_sign_provider.events.callback import MAX_CALLBACK_BYTES, event_hash
from dropbox_sign_provider.plugins.callbacks import app
from tests.helpers import CANCELED_A, SECRETS, assert_acknowledged, set_connection

# The official test vector of Dropbox Sign's documentation.
VECTOR_KEY = "324e3b0840f065eb51f3fd63231d0d33daa35d4ed10d27718839e81737065782"
VECTOR_HASH = "ff8b03439122f9160500c3fb855bdee5a9ccba5fff27d3b258745d8f3074832f"


def test_the_official_test_vector_verifies_and_is_recorded(
    post: Callable[..., Any], recorded: Any, monkeypatch: pytest.MonkeyPatch, clock: Any
) -> None:
    assert event_hash(VECTOR_KEY, "1669926463", "account_confirmed") == VECTOR_HASH
    clock.now = 1669926463 + 30  # the vector's event, received as it was sent
    set_connection(monkeypatch, "ds_cb_vector", password=VECTOR_KEY)
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", "ds_cb_a,ds_cb_vector")
    body = {
        "event": {
            "event_time": "1669926463",
            "event_type": "account_confirmed",
            "event_hash": VECTOR_HASH,
            "event_metadata": {},
        }
    }
    assert_acknowledged(post(body))
    assert recorded.board_keys("ds_cb_vector") == ["account_confirmed/1669926463/-"]
    assert recorded.board("ds_cb_a") is None


@pytest.mark.parametrize("form", ["multipart", "urlencoded", "file"])
def test_a_verified_event_is_recorded_once_on_its_asset_and_board(
    form: str,
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    event_of: Callable[..., Any],
    recorded: Any,
    asset_dag: str,
) -> None:
    body = make_callback("signature_request_canceled")
    event = event_of(body)
    assert_acknowledged(post(body, form=form))

    assert recorded.asset_events(CANCELED_A) == [event.asset_extra("ds_cb_a")]
    assert recorded.asset_events() == [event.asset_extra("ds_cb_a")]
    assert json.loads(recorded.board("ds_cb_a")) == {
        "seq": 1,
        "events": [[1, event.key, event.signature_request_id]],
    }
    assert recorded.board("ds_cb_b") is None
    # Created as the REST API creates one: the DAG scheduled on the asset is queued.
    assert recorded.queued(asset_dag) == 1


def test_nothing_recorded_holds_a_credential(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    accounts: dict[str, str],
) -> None:
    for key in accounts.values():
        response = post(make_callback("signature_request_canceled", key=key))
        assert_acknowledged(response)
    stored = json.dumps([recorded.asset_events(), *(recorded.board(c) for c in accounts)])
    stored += "".join(recorded.board_description(c) or "" for c in accounts)
    assert {"ds_cb_a", "ds_cb_b"} <= {extra["dropbox_sign_conn_id"] for extra in recorded.asset_events()}
    for secret in (*SECRETS, *accounts.values()):
        assert secret not in stored


def test_the_board_variable_says_what_it_is(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    assert_acknowledged(post(make_callback()))
    description = recorded.board_description("ds_cb_a")
    assert "Dropbox Sign" in description
    assert "ds_cb_a" in description
    assert "callback" in description


def test_an_event_is_recorded_for_the_account_whose_key_verifies_it(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    event_of: Callable[..., Any],
    recorded: Any,
    accounts: dict[str, str],
) -> None:
    body = make_callback("signature_request_canceled", key=accounts["ds_cb_b"])
    assert_acknowledged(post(body))
    assert recorded.board("ds_cb_a") is None
    assert recorded.board_keys("ds_cb_b") == [event_of(body).key]
    assert recorded.asset_events(CANCELED_A) == []
    assert recorded.asset_events(event_asset_uri("signature_request_canceled", "ds_cb_b")) == [
        event_of(body).asset_extra("ds_cb_b")
    ]


def test_a_redelivered_event_changes_nothing(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any, asset_dag: str
) -> None:
    body = make_callback("signature_request_canceled")
    assert_acknowledged(post(body))
    board, events, queued = recorded.board("ds_cb_a"), recorded.asset_events(), recorded.queued(asset_dag)
    for form in ("multipart", "urlencoded"):
        assert_acknowledged(post(body, form=form))
    assert recorded.board("ds_cb_a") == board
    assert recorded.asset_events() == events
    assert len(events) == 1
    assert recorded.queued(asset_dag) == queued


def test_a_redelivery_after_the_board_lost_the_event_makes_no_second_asset_event(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    # The board keeps the last 1,000 events; Dropbox Sign retries for three days.
    body = make_callback("signature_request_canceled")
    assert_acknowledged(post(body))
    recorded.forget_board("ds_cb_a")
    assert_acknowledged(post(body))
    assert len(recorded.asset_events(CANCELED_A)) == 1
    assert recorded.board("ds_cb_a") is None


def test_two_events_of_one_type_in_one_second_are_two_events(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    event_of: Callable[..., Any],
    recorded: Any,
) -> None:
    second_ago = int(time.time()) - 1
    first = make_callback("signature_request_canceled", event_time=second_ago)
    second = make_callback("signature_request_canceled", event_time=second_ago)
    assert first["event"]["event_hash"] == second["event"]["event_hash"]
    assert_acknowledged(post(first))
    assert_acknowledged(post(second))
    assert recorded.board_keys("ds_cb_a") == [event_of(first).key, event_of(second).key]
    assert [e["event_key"] for e in recorded.asset_events(CANCELED_A)] == [
        event_of(first).key,
        event_of(second).key,
    ]


def test_each_signers_signed_event_of_one_request_in_one_second_is_recorded(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    event_of: Callable[..., Any],
    recorded: Any,
) -> None:
    # Dropbox Sign sends signature_request_signed once per signer, each naming its signature in
    # event_metadata.related_signature_id; two signers may sign in the same second.
    second_ago = int(time.time()) - 1
    request_id = "ab" * 20
    signers = [
        make_callback(
            "signature_request_signed",
            event_time=second_ago,
            signature_request_id=request_id,
            event_metadata={"related_signature_id": signature_id, "reported_for_account_id": "acc"},
        )
        for signature_id in ("c1" * 16, "d2" * 16)
    ]
    all_signed = make_callback(
        "signature_request_all_signed", event_time=second_ago, signature_request_id=request_id
    )
    for body in [*signers, signers[0], all_signed]:
        assert_acknowledged(post(body))
    keys = [event_of(body).key for body in [*signers, all_signed]]
    assert keys[:2] == [
        f"signature_request_signed/{second_ago}/{request_id}/{'c1' * 16}",
        f"signature_request_signed/{second_ago}/{request_id}/{'d2' * 16}",
    ]
    # The redelivery of the first signer's event is not recorded again.
    assert recorded.board_keys("ds_cb_a") == keys
    ledger = recorded.ledgers()[f"dropbox_sign_event_ids.{second_ago:012d}.ds_cb_a.signature_request_signed"]
    assert ledger["ids"] == [f"{request_id}/{'c1' * 16}", f"{request_id}/{'d2' * 16}"]
    (extra,) = recorded.asset_events(event_asset_uri("signature_request_all_signed", "ds_cb_a"))
    assert (extra["event_key"], extra["related_signature_id"]) == (keys[2], None)


def test_a_related_signature_id_that_is_not_an_id_is_dropped_not_refused(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    event_of: Callable[..., Any],
    recorded: Any,
) -> None:
    # A 4xx would make Dropbox Sign retry a verified event for three days.
    body = make_callback("signature_request_signed", event_metadata={"related_signature_id": "a/../b"})
    assert_acknowledged(post(body))
    assert event_of(body).related_signature_id is None
    assert recorded.board_keys("ds_cb_a") == [event_of(body).key]


def test_callback_test_is_acknowledged_and_recorded_nowhere(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    assert_acknowledged(post(make_callback("callback_test", signature_request_id=None)))
    assert recorded.nothing()


def test_a_verified_event_of_a_type_added_after_this_release_is_acknowledged_and_recorded_nowhere(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    # Refusing it would make Dropbox Sign retry it for three days.
    assert_acknowledged(post(make_callback("signature_request_teleported")))
    assert recorded.nothing()
    forged = make_callback("signature_request_teleported", key="not-the-key")
    assert post(forged).status_code == 403


def test_an_event_no_dag_schedules_on_goes_on_the_board_only(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    event_of: Callable[..., Any],
    recorded: Any,
) -> None:
    body = make_callback("signature_request_declined")
    assert_acknowledged(post(body))
    assert recorded.board_keys("ds_cb_a") == [event_of(body).key]
    assert recorded.asset_events() == []


def _forged(make_callback: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    body = make_callback()
    body["event"]["event_hash"] = "0" * 64
    return body


def _other_type_same_hash(make_callback: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    # The hash of a real canceled event, replayed as an all_signed one.
    body = make_callback("signature_request_canceled")
    body["event"]["event_type"] = "signature_request_all_signed"
    return body


def _other_time_same_hash(make_callback: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    body = make_callback("signature_request_canceled")
    body["event"]["event_time"] = str(int(body["event"]["event_time"]) + 1)
    return body


def _token_account(make_callback: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    # Signed by an account the receiver is not configured for (here: keyed with its access token).
    from tests.helpers import SECRET_ACCESS_TOKEN

    return make_callback(key=SECRET_ACCESS_TOKEN)


@pytest.mark.parametrize("make_body", [_forged, _other_type_same_hash, _other_time_same_hash, _token_account])
def test_an_event_whose_hash_does_not_verify_is_refused_and_recorded_nowhere(
    make_body: Callable[..., dict[str, Any]],
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
) -> None:
    response = post(make_body(make_callback))
    assert response.status_code == 403
    assert response.json() == {"detail": "event_hash does not verify for any configured account"}
    assert recorded.nothing()


def test_a_real_event_of_an_account_not_configured_is_refused(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    accounts: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", "ds_cb_a")
    response = post(make_callback(key=accounts["ds_cb_b"]))
    assert response.status_code == 403
    assert recorded.nothing()


def _without(field: str) -> Callable[[dict[str, Any]], str]:
    def drop(body: dict[str, Any]) -> str:
        del body["event"][field]
        return json.dumps(body)

    return drop


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], str]:
    def change(body: dict[str, Any]) -> str:
        body["event"][field] = value
        return json.dumps(body)

    return change


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda body: json.dumps(body)[:-1], "not valid JSON"),
        (lambda body: "", "not valid JSON"),
        (lambda body: json.dumps({"signature_request": body["signature_request"]}), "no event object"),
        (_without("event_hash"), "event_hash"),
        (_without("event_time"), "event_time"),
        (_without("event_type"), "event_type"),
        (_set("event_type", "Signature Request!"), "not a Dropbox Sign event type"),
        (_set("event_time", "yesterday"), "event_time"),
        (_set("event_hash", "f" * 63), "event_hash"),
        (
            lambda body: json.dumps({**body, "signature_request": {"signature_request_id": "../x"}}),
            "signature_request_id",
        ),
    ],
)
def test_a_malformed_event_is_refused_and_recorded_nowhere(
    spoil: Callable[[dict[str, Any]], str],
    says: str,
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
) -> None:
    response = post(spoil(make_callback()))
    assert response.status_code == 400
    assert says in response.json()["detail"]
    assert recorded.nothing()


@pytest.mark.parametrize(
    ("request_kwargs", "status", "says"),
    [
        ({"files": {"event": (None, "{}")}}, 400, "no json field"),
        ({"data": {"payload": "{}"}}, 400, "no json field"),
        ({"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "json field"),
        ({"content": b"--x\r\ngarbage", "headers": {"content-type": "multipart/form-data"}}, 400, "form"),
        ({"json": {"event": {}}}, 415, "multipart/form-data"),
        ({"content": b"json=1"}, 415, "multipart/form-data"),
    ],
)
def test_a_body_that_is_not_a_callback_form_is_refused_and_recorded_nowhere(
    request_kwargs: dict[str, Any], status: int, says: str, receiver_app: TestClient, recorded: Any
) -> None:
    response = receiver_app.post("/callback", **request_kwargs)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert recorded.nothing()


def test_two_json_fields_are_refused(
    receiver_app: TestClient, make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    text = json.dumps(make_callback())
    response = receiver_app.post("/callback", files=[("json", (None, text)), ("json", (None, text))])
    assert response.status_code == 400
    assert "more than one json field" in response.json()["detail"]
    assert recorded.nothing()


def test_an_oversized_body_is_refused_by_its_length(
    receiver_app: TestClient, make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    body = make_callback()
    body["signature_request"]["metadata"] = {"padding": "x" * MAX_CALLBACK_BYTES}
    response = receiver_app.post("/callback", files={"json": (None, json.dumps(body))})
    assert response.status_code == 413
    assert str(MAX_CALLBACK_BYTES) in response.json()["detail"]
    assert recorded.nothing()


def test_an_oversized_body_of_no_declared_length_is_refused_as_it_arrives(
    receiver_app: TestClient, make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    text = json.dumps(make_callback())
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="json"\r\n\r\n' + text.encode()
        for _ in range(40):
            sent.append(1)
            yield b" " * 64 * 1024
        yield b"\r\n--x--\r\n"

    response = receiver_app.post(
        "/callback", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413
    assert recorded.nothing()


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(
    receiver_app: TestClient, make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    # What arrives would be a good event: the declared length alone refuses it, unread.
    text = json.dumps(make_callback())
    response = receiver_app.post(
        "/callback",
        content=b'--x\r\nContent-Disposition: form-data; name="json"\r\n\r\n'
        + text.encode()
        + b"\r\n--x--\r\n",
        headers={
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(MAX_CALLBACK_BYTES + 1),
        },
    )
    assert response.status_code == 413
    assert response.json()["detail"] == f"the body is over {MAX_CALLBACK_BYTES} bytes"
    assert recorded.nothing()


def test_a_bad_content_length_is_refused(receiver_app: TestClient, recorded: Any) -> None:
    response = receiver_app.post(
        "/callback",
        content=b"json=1",
        headers={"content-type": "application/x-www-form-urlencoded", "content-length": "-1"},
    )
    assert response.status_code == 400
    assert recorded.nothing()


@pytest.mark.parametrize("conn_ids", ["ds_cb_missing", "ds_cb_token", "ds_cb_token,ds_cb_missing", " , "])
def test_no_usable_account_refuses_every_event_and_records_nothing(
    conn_ids: str,
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers import SECRET_ACCESS_TOKEN

    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", conn_ids)
    for key in (SECRET_ACCESS_TOKEN, "anything"):
        response = post(make_callback(key=key))
        assert response.status_code == 503
        assert "callback_conn_ids" in response.json()["detail"]
        assert SECRET_ACCESS_TOKEN not in response.text
    assert recorded.nothing()


def test_a_token_only_or_missing_connection_is_skipped_with_one_warning(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dropbox_sign_provider.events.accounts import forget_callback_accounts

    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", "ds_cb_token,ds_cb_missing,ds_cb_a")
    with caplog.at_level("WARNING", logger="dropbox_sign_provider.events.accounts"):
        assert_acknowledged(post(make_callback()))
        # The connections are read again (as after a minute), the problems are not told again.
        monkeypatch.setattr("dropbox_sign_provider.events.accounts.ACCOUNTS_TTL_SECONDS", 0.0)
        assert_acknowledged(post(make_callback()))
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("events.accounts")]
    assert len(warnings) == 2, warnings
    assert any("'ds_cb_token'" in w and "access_token" in w for w in warnings)
    assert any("'ds_cb_missing'" in w and "not defined" in w for w in warnings)
    assert len(recorded.board_keys("ds_cb_a")) == 2
    forget_callback_accounts()


def test_a_rotated_key_is_used_once_the_connections_are_read_again(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert_acknowledged(post(make_callback()))
    set_connection(monkeypatch, "ds_cb_a", password="sk-live-ROTATED")
    # Kept for a minute: the new key is not known yet, the event is refused and sent again later.
    assert post(make_callback(key="sk-live-ROTATED")).status_code == 403
    monkeypatch.setattr("dropbox_sign_provider.events.accounts.ACCOUNTS_TTL_SECONDS", 0.0)
    assert_acknowledged(post(make_callback(key="sk-live-ROTATED")))
    assert post(make_callback()).status_code == 403
    assert len(recorded.board_keys("ds_cb_a")) == 2


def test_concurrent_events_in_one_process_are_all_on_the_board(
    accounts: dict[str, str], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    bodies = [make_callback("signature_request_canceled") for _ in range(8)]
    statuses: list[int] = []
    start = threading.Barrier(len(bodies))

    def deliver(body: dict[str, Any]) -> None:
        with TestClient(app) as client:
            start.wait()
            statuses.append(client.post("/callback", files={"json": (None, json.dumps(body))}).status_code)

    threads = [threading.Thread(target=deliver, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * len(bodies)
    assert len(recorded.board_keys("ds_cb_a")) == len(bodies)
    assert len(recorded.asset_events(CANCELED_A)) == len(bodies)
