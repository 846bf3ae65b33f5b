"""What a callback event is, how it verifies, the assets it becomes and the board of recent events."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from dropbox_sign_provider.events import callback as events
from dropbox_sign_provider.events.assets import event_asset_uri, sanitize_uri, signature_request_event_asset
from dropbox_sign_provider.events.board import (
    MAX_RECENT_EVENTS,
    add_recent_event,
    board_problem,
    recent_event_requests,
    recent_events_variable,
)
from dropbox_sign_provider.events.callback import (
    MAX_EVENT_AGE_SECONDS,
    CallbackEvent,
    event_hash,
    parse_callback,
)
from dropbox_sign_provider.events.ledger import event_ledger_variable, expired_ledgers_range

# The official test vector of API-NOTES ("Callbacks").
VECTOR_KEY = "324e3b0840f065eb51f3fd63231d0d33daa35d4ed10d27718839e81737065782"
VECTOR_HASH = "ff8b03439122f9160500c3fb855bdee5a9ccba5fff27d3b258745d8f3074832f"
SR_ID = "fa5c8a0b0f492d768749333ad6fcc214c111e967"


def body(
    event_type: str = "signature_request_canceled", event_time: str = "1669926463", **request: object
) -> str:
    payload: dict[str, object] = {
        "event": {
            "event_time": event_time,
            "event_type": event_type,
            "event_hash": event_hash("k", event_time, event_type),
            "event_metadata": {"reported_for_account_id": "abc"},
        }
    }
    if request:
        payload["signature_request"] = request
    return json.dumps(payload)


def test_the_official_test_vector_verifies() -> None:
    assert event_hash(VECTOR_KEY, "1669926463", "account_confirmed") == VECTOR_HASH
    event = CallbackEvent("account_confirmed", "1669926463", VECTOR_HASH)
    assert event.verified_by(VECTOR_KEY)
    assert CallbackEvent("account_confirmed", "1669926463", VECTOR_HASH.upper()).verified_by(VECTOR_KEY)
    assert not event.verified_by(VECTOR_KEY[:-1] + "6")
    assert not CallbackEvent("account_confirmed", "1669926464", VECTOR_HASH).verified_by(VECTOR_KEY)
    assert not CallbackEvent("callback_test", "1669926463", VECTOR_HASH).verified_by(VECTOR_KEY)


def test_a_callback_is_parsed_with_its_request() -> None:
    event = parse_callback(body(signature_request_id=SR_ID, title="NDA", metadata={"team": "legal"}))
    assert event.event_type == "signature_request_canceled"
    assert event.signature_request_id == SR_ID
    assert event.title == "NDA"
    assert event.metadata == {"team": "legal"}
    assert event.key == f"signature_request_canceled/1669926463/{SR_ID}"
    assert event.verified_by("k")


def test_an_event_type_added_after_this_release_is_parsed_but_not_known() -> None:
    event = parse_callback(body("signature_request_teleported"))
    assert event.verified_by("k")
    assert not event.known
    assert parse_callback(body()).known


def test_an_account_event_has_no_request() -> None:
    event = parse_callback(body("callback_test"))
    assert event.signature_request_id is None
    assert event.key == "callback_test/1669926463/-"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("not json", "not valid JSON"),
        ("[]", "no event object"),
        (json.dumps({"event": "x"}), "no event object"),
        (body("No Such Event"), "'No Such Event'"),
        (body(event_time="12:00"), "'12:00'"),
        (json.dumps({"event": {"event_type": "callback_test", "event_time": "1"}}), "event_hash"),
        (body(signature_request_id="../etc"), "'../etc'"),
        (json.dumps({**json.loads(body()), "signature_request": "x"}), "signature_request"),
    ],
)
def test_malformed_callbacks_are_refused_naming_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        parse_callback(text)


def test_the_extra_of_an_asset_event_holds_the_event_not_the_body_or_a_key() -> None:
    event = parse_callback(body(signature_request_id=SR_ID, title="NDA", metadata={}, signatures=[{"x": 1}]))
    extra = event.asset_extra("dropbox_sign_default")
    assert extra == {
        "dropbox_sign_conn_id": "dropbox_sign_default",
        "event_type": "signature_request_canceled",
        "event_time": 1669926463,
        "event_key": event.key,
        "signature_request_id": SR_ID,
        "related_signature_id": None,
        "title": "NDA",
        "metadata": {},
    }
    assert "event_hash" not in json.dumps(extra)


def test_assets_are_one_per_account_and_event_type() -> None:
    asset = signature_request_event_asset("signature_request_all_signed", "sign_eu")
    assert asset.uri == "dropbox-sign://sign_eu/signature_request_all_signed"
    assert event_asset_uri("signature_request_canceled") == (
        "dropbox-sign://dropbox_sign_default/signature_request_canceled"
    )
    assert sanitize_uri(urlsplit(asset.uri)) == urlsplit(asset.uri)


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("dropbox-sign://dropbox_sign_default/not_an_event", "'not_an_event'"),
        ("dropbox-sign://dropbox_sign_default/callback_test", "'callback_test'"),
        ("dropbox-sign://dropbox_sign_default/signature_request_canceled?x=1", "no query"),
        ("dropbox-sign:///signature_request_canceled", "dropbox_sign_conn_id ''"),
    ],
)
def test_bad_asset_uris_are_refused(uri: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        sanitize_uri(urlsplit(uri))


def test_a_bad_connection_id_is_named() -> None:
    with pytest.raises(ValueError, match="'a b'"):
        recent_events_variable("a b")


def test_the_board_keeps_each_event_once_and_rotates() -> None:
    first = parse_callback(body(signature_request_id=SR_ID))
    board = add_recent_event(None, first)
    assert board == {"seq": 1, "events": [[1, first.key, SR_ID]]}
    # Redelivered: nothing changes.
    assert add_recent_event(board, first) is None
    assert add_recent_event(json.dumps(board), first) is None
    # Same type and second, another request: another event.
    other = parse_callback(body(signature_request_id="ab" * 20))
    board = add_recent_event(board, other)
    assert board is not None
    assert recent_event_requests(board) == (2, {SR_ID: 1, "ab" * 20: 2})
    assert recent_event_requests(board, after_seq=1) == (2, {"ab" * 20: 2})
    for n in range(MAX_RECENT_EVENTS):
        board = add_recent_event(board, parse_callback(body(event_time=str(n), signature_request_id=SR_ID)))
        assert board is not None
    assert len(board["events"]) == MAX_RECENT_EVENTS
    assert board["seq"] == MAX_RECENT_EVENTS + 2


@pytest.mark.parametrize("stored", [None, "", "nonsense", "[1]", '{"seq": "1", "events": []}', {"seq": 1}])
def test_an_unreadable_board_names_nothing(stored: object) -> None:
    assert recent_event_requests(stored) == (0, {})


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        (None, None),
        ('{"seq": 0, "events": []}', None),
        ("gAAAAABrDaB87IMVk", "it is not JSON (encrypted with another fernet_key?)"),
        ("[1]", "it is not a board of recent events"),
        ({"seq": 1}, "it is not a board of recent events"),
    ],
)
def test_what_is_wrong_with_a_stored_board_is_said(stored: object, problem: str | None) -> None:
    assert board_problem(stored) == problem


def test_a_board_whose_sequence_went_back_is_read_whole() -> None:
    board = {"seq": 3, "events": [[2, "k", "ab" * 20], [3, "k2", None]]}
    assert recent_event_requests(board, after_seq=50) == (3, {"ab" * 20: 2})


def test_every_event_type_of_the_openapi_description_is_known() -> None:
    text = (Path(__file__).parent.parent / "data" / "dropbox-sign" / "openapi.yaml").read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schema = yaml.load(text, Loader=loader)["components"]["schemas"]["EventCallbackRequestEvent"]  # noqa: S506
    assert set(schema["properties"]["event_type"]["enum"]) == events.EVENT_TYPES


@pytest.mark.parametrize("conn_id", ["a", "a.0", "a-0", "A", "x" * 250])
def test_the_expired_ledgers_range_holds_every_old_ledger_and_no_fresh_one(conn_id: str) -> None:
    now = 1_800_000_000
    low, high = expired_ledgers_range(now)
    fresh = now - MAX_EVENT_AGE_SECONDS
    for when, expired in [(fresh - 1, True), (0, True), (fresh, False), (now + 600, False)]:
        key = event_ledger_variable(conn_id, "signature_request_canceled", when)
        assert len(key) <= 250
        assert (low <= key < high) is expired, key


# --- the receiver's limits, at their boundaries -----------------------------------------------------


def test_an_event_is_fresh_up_to_the_retry_horizon_and_the_clock_skew() -> None:
    sent = 1_700_000_000
    skew = events.EVENT_CLOCK_SKEW_SECONDS
    assert events.freshness_problem(str(sent), sent + MAX_EVENT_AGE_SECONDS) is None
    assert events.freshness_problem(str(sent), sent + MAX_EVENT_AGE_SECONDS + 1) == (
        f"event_time {sent} is {MAX_EVENT_AGE_SECONDS + 1} s old, over {MAX_EVENT_AGE_SECONDS} s "
        "(Dropbox Sign's retry horizon plus clock skew)"
    )
    assert events.freshness_problem(str(sent), sent - skew) is None
    ahead = events.freshness_problem(str(sent), sent - skew - 1)
    assert ahead is not None
    assert ahead.startswith(f"event_time {sent} is {skew + 1} s ahead, over the ")


def test_a_payload_is_recorded_up_to_its_limits_and_refused_past_them() -> None:
    def event(title: str | None = None, metadata: dict[str, object] | None = None) -> CallbackEvent:
        return CallbackEvent("signature_request_signed", "1", "0" * 64, SR_ID, title, metadata or {})

    limit, most = events.MAX_TITLE_CHARS, events.MAX_METADATA_BYTES
    assert event(title="t" * limit).payload_problem() is None
    assert event(title="t" * (limit + 1)).payload_problem() == (
        f"its title has {limit + 1} characters, over Dropbox Sign's {limit}"
    )
    # [null,{"p":"..."}] takes 15 bytes besides the padding.
    assert event(metadata={"p": "x" * (most - 15)}).payload_problem() is None
    assert event(metadata={"p": "x" * (most - 14)}).payload_problem() == (
        f"its title and metadata take {most + 1} bytes, over {most}"
    )
    nested: dict[str, object] = {}
    for _ in range(100_000):
        nested = {"n": nested}
    assert event(metadata=nested).payload_problem() == (
        f"its title and metadata take {events.MAX_CALLBACK_BYTES + 1} bytes, over {most}"
    )


def test_what_a_callback_carries_is_read_as_sent() -> None:
    # A number for event_time, an upper-case hash, and the signer the event is about.
    payload = json.loads(body("signature_request_signed", signature_request_id=SR_ID, title="NDA"))
    payload["event"]["event_time"] = 1669926463
    payload["event"]["event_hash"] = payload["event"]["event_hash"].upper()
    payload["event"]["event_metadata"]["related_signature_id"] = "5687fb7bd5b7d6eb3b6bdd0f0e9ef5d9"
    payload["signature_request"]["metadata"] = {"case": "42"}
    event = parse_callback(json.dumps(payload))
    assert (event.event_time, event.title, event.metadata) == ("1669926463", "NDA", {"case": "42"})
    assert event.related_signature_id == "5687fb7bd5b7d6eb3b6bdd0f0e9ef5d9"
    del payload["signature_request"]
    assert parse_callback(json.dumps(payload)).related_signature_id == "5687fb7bd5b7d6eb3b6bdd0f0e9ef5d9"
    assert parse_callback(body(event_time="1" * 12)).event_time == "1" * 12
    # event_metadata that is not an object names no signer, and refuses nothing.
    payload["event"]["event_metadata"] = ["not", "an", "object"]
    assert parse_callback(json.dumps(payload)).related_signature_id is None
    # A title or metadata of another type is not recorded as one.
    odd = parse_callback(body(signature_request_id=SR_ID, title=42, metadata=["x"]))
    assert (odd.title, odd.metadata) == (None, {})


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[" * 100_000, "the json field is nested too deeply to be an event"),
        ("[]", "the json field has no event object"),
        (
            json.dumps({"event": {"event_type": "callback_test", "event_time": "1"}}),
            "event_hash is missing or not a hex SHA-256",
        ),
        (body(event_time="1" * 13), f"event_time '{'1' * 13}' is not epoch seconds"),
        (json.dumps({**json.loads(body()), "signature_request": "x"}), "signature_request is not an object"),
    ],
)
def test_a_malformed_callback_is_told_exactly_what_is_wrong(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        parse_callback(text)
