"""
What one captured event can do when it is sent again: refused outside the freshness window,
bounded inside it, never recorded under another spelling of an id, found again by its ledger's key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from dropbox_sign_provider.events.callback import (
    EVENT_CLOCK_SKEW_SECONDS,
    MAX_EVENT_AGE_SECONDS,
    MAX_METADATA_BYTES,
    MAX_RECORDED_BYTES_PER_EVENT_TIME,
    MAX_REQUESTS_PER_EVENT_TIME,
    MAX_TITLE_CHARS,
)
from dropbox_sign_provider.events.ledger import event_ledger_variable
from dropbox_sign_provider.plugins.callbacks import refused_events
from tests.helpers import CANCELED_A, assert_acknowledged, set_connection

SR_ID = "fa5c8a0b0f492d768749333ad6fcc214c111e967"


def with_id(body: dict[str, Any], sr_id: str) -> dict[str, Any]:
    return {**body, "signature_request": {**body["signature_request"], "signature_request_id": sr_id}}


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "acknowledged and not recorded" in r.getMessage()]


@pytest.fixture
def replay(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], clock: Any
) -> Callable[..., Any]:
    """``replay(age, sr_id)``: posts a canceled event that happened ``age`` seconds ago."""

    def send(age: float, sr_id: str = SR_ID) -> Any:
        body = make_callback(event_time=int(clock.now - age), signature_request_id=sr_id)
        return post(body)

    return send


# --- the freshness window ------------------------------------------------------------------------


def test_the_window_is_dropbox_signs_retry_horizon_plus_the_clock_skew() -> None:
    # "about three days" of retries (API notes, Callbacks), and ten minutes of clock skew.
    assert MAX_EVENT_AGE_SECONDS == 3 * 24 * 3600 + 10 * 60
    assert EVENT_CLOCK_SKEW_SECONDS == 10 * 60


def test_an_event_of_2017_is_acknowledged_and_recorded_nowhere(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    assert_acknowledged(post(make_callback(event_time=1_500_000_000)))
    assert recorded.nothing()


@pytest.mark.parametrize(
    ("age", "kept"),
    [
        (MAX_EVENT_AGE_SECONDS - 5, True),
        (MAX_EVENT_AGE_SECONDS + 5, False),
        (-EVENT_CLOCK_SKEW_SECONDS + 5, True),
        (-EVENT_CLOCK_SKEW_SECONDS - 5, False),
        (-10 * 365 * 24 * 3600, False),
    ],
    ids=[
        "just-inside-the-horizon",
        "just-past-it",
        "ahead-within-skew",
        "ahead-past-skew",
        "ten-years-ahead",
    ],
)
def test_only_events_dropbox_sign_could_still_deliver_are_recorded(
    age: int, kept: bool, replay: Callable[..., Any], recorded: Any
) -> None:
    assert_acknowledged(replay(age))
    assert (len(recorded.asset_events(CANCELED_A)) == 1) is kept
    assert (recorded.board("ds_cb_a") is not None) is kept


def test_a_stale_event_is_logged_once_per_event_time_and_counted(
    replay: Callable[..., Any], recorded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before = refused_events().get("too_old", 0)
    with caplog.at_level("WARNING", logger="dropbox_sign_provider.plugins.callbacks"):
        for n in range(5):
            assert_acknowledged(replay(MAX_EVENT_AGE_SECONDS + 100, f"{n:040x}"))
    lines = refusal_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "too_old" in lines[0].getMessage()
    assert lines[0].exc_info is None
    assert refused_events()["too_old"] == before + 5
    assert recorded.nothing()


def test_a_stale_event_whose_hash_does_not_verify_is_still_refused(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    # The window is checked after the hash: a forged old event is a 403, not an acknowledgement.
    assert post(make_callback(event_time=1_500_000_000, key="not-the-key")).status_code == 403
    assert recorded.nothing()


# --- what one event time may record --------------------------------------------------------------


def test_one_event_time_records_at_most_its_bound_of_requests(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = make_callback()
    with caplog.at_level("WARNING", logger="dropbox_sign_provider.plugins.callbacks"):
        for n in range(MAX_REQUESTS_PER_EVENT_TIME + 20):
            assert_acknowledged(post(with_id(body, f"{n:040x}")))
    assert len(recorded.asset_events(CANCELED_A)) == MAX_REQUESTS_PER_EVENT_TIME
    assert len(recorded.board_keys("ds_cb_a")) == MAX_REQUESTS_PER_EVENT_TIME
    assert len(refusal_lines(caplog)) == 1
    # Another second of the same type is another event time, with its own bound.
    assert_acknowledged(post(make_callback()))
    assert len(recorded.asset_events(CANCELED_A)) == MAX_REQUESTS_PER_EVENT_TIME + 1


def test_one_event_time_records_at_most_its_bound_of_bytes(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    body = make_callback()
    body["signature_request"]["metadata"] = {"note": "x" * (MAX_METADATA_BYTES - 100)}
    fits = MAX_RECORDED_BYTES_PER_EVENT_TIME // MAX_METADATA_BYTES
    for n in range(fits + 5):
        assert_acknowledged(post(with_id(body, f"{n:040x}")))
    extras = recorded.asset_events(CANCELED_A)
    assert len(extras) == fits
    assert (
        sum(len(json.dumps([e["title"], e["metadata"]])) for e in extras) <= MAX_RECORDED_BYTES_PER_EVENT_TIME
    )


@pytest.mark.parametrize(
    "spoil",
    [
        lambda request: request.update(title="t" * (MAX_TITLE_CHARS + 1)),
        lambda request: request.update(metadata={"padding": "x" * MAX_METADATA_BYTES}),
    ],
    ids=["title-over-dropbox-signs-limit", "metadata-over-the-limit"],
)
def test_a_payload_larger_than_dropbox_sign_sends_is_acknowledged_and_recorded_nowhere(
    spoil: Callable[[dict[str, Any]], None],
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
) -> None:
    body = make_callback()
    spoil(body["signature_request"])
    before = refused_events().get("payload_too_large", 0)
    assert_acknowledged(post(body))
    assert recorded.nothing()
    assert refused_events()["payload_too_large"] == before + 1


def test_a_title_at_dropbox_signs_limit_is_recorded(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    body = make_callback()
    body["signature_request"]["title"] = "t" * MAX_TITLE_CHARS
    assert_acknowledged(post(body))
    assert [e["title"] for e in recorded.asset_events(CANCELED_A)] == ["t" * MAX_TITLE_CHARS]


# --- duplicates, by the ledger's key -------------------------------------------------------------


def test_a_redelivery_is_found_by_one_keyed_lookup_never_by_reading_asset_events(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    from airflow.settings import engine
    from sqlalchemy import event as sa_event

    body = make_callback()
    for _n in range(20):
        assert_acknowledged(post(make_callback()))
    assert_acknowledged(post(body))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        assert_acknowledged(post(body))
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
    reads = [s for s in statements if s.startswith("select")]
    assert not [s for s in reads if "asset_event" in s], reads
    assert len(recorded.asset_events(CANCELED_A)) == 21
    event_time = body["event"]["event_time"]
    ledger = recorded.ledgers()[event_ledger_variable("ds_cb_a", "signature_request_canceled", event_time)]
    assert ledger["ids"] == [body["signature_request"]["signature_request_id"]]


def test_ledgers_of_event_times_past_the_window_are_deleted(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any, clock: Any
) -> None:
    old = make_callback(event_time=int(clock.now) - MAX_EVENT_AGE_SECONDS + 30)
    assert_acknowledged(post(old))
    assert len(recorded.ledgers()) == 1
    clock.now += 60  # the old event's time leaves the window
    assert_acknowledged(post(make_callback(event_time=int(clock.now) - 5)))
    assert list(recorded.ledgers()) == [
        event_ledger_variable("ds_cb_a", "signature_request_canceled", int(clock.now) - 5)
    ]
    # Delivered again now, it is refused by its age, not recorded a second time.
    assert_acknowledged(post(old))
    assert len(recorded.asset_events(CANCELED_A)) == 2


def test_the_ledger_holds_no_credential(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    accounts: dict[str, str],
) -> None:
    for key in accounts.values():
        assert_acknowledged(post(make_callback(key=key)))
    stored = json.dumps(recorded.ledgers())
    assert len(recorded.ledgers()) == 2
    for key in accounts.values():
        assert key not in stored


# --- ids: the hook's rule, before anything is recorded -------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    ["AB", "ab", SR_ID.upper(), SR_ID[:15], "f" * 65, f" {SR_ID}x", "x" * 200_000],
    ids=["two-upper", "two-lower", "upper-cased-real-id", "15-chars", "65-chars", "trailing-x", "200k"],
)
def test_an_id_the_hook_would_refuse_is_refused_before_anything_is_recorded(
    bad_id: str,
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="dropbox_sign_provider.plugins.callbacks"):
        response = post(make_callback(signature_request_id=bad_id))
    assert response.status_code == 400
    assert "is not a Dropbox Sign id" in response.json()["detail"]
    assert len(response.text) < 400
    assert recorded.nothing()
    [line] = [r for r in caplog.records if "refused (400)" in r.getMessage()]
    assert line.exc_info is None
    assert len(line.getMessage()) < 400


def test_upper_casing_a_recorded_id_neither_records_it_again_nor_passes_as_another_request(
    post: Callable[..., Any], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    body = make_callback(signature_request_id=SR_ID)
    assert_acknowledged(post(body))
    assert post(with_id(body, SR_ID.upper())).status_code == 400
    assert_acknowledged(post(body))
    assert [e["signature_request_id"] for e in recorded.asset_events(CANCELED_A)] == [SR_ID]


# --- parse failures: one short line, no traceback ------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"event": ' * 50_000, json.dumps({"event": {"event_type": "x" * 300_000}})],
    ids=["100k-brackets", "50k-nested-objects", "300k-event-type"],
)
def test_a_body_that_cannot_be_parsed_is_a_400_with_one_short_log_line(
    text: str, post: Callable[..., Any], recorded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"):
        response = post(text)
    assert response.status_code == 400
    assert len(response.text) < 400
    ours = [r for r in caplog.records if r.name.startswith("dropbox_sign_provider")]
    assert len(ours) == 1, [r.getMessage()[:200] for r in ours]
    assert ours[0].exc_info is None
    assert len(ours[0].getMessage()) < 400
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert recorded.nothing()


# --- every configured connection whose key verifies ----------------------------------------------


def test_an_event_is_recorded_for_every_configured_connection_sharing_the_key(
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    event_of: Callable[..., Any],
    recorded: Any,
    accounts: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dropbox_sign_provider.events.accounts import forget_callback_accounts

    set_connection(monkeypatch, "ds_cb_a2", password=accounts["ds_cb_a"])
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", "ds_cb_a,ds_cb_b,ds_cb_a2")
    forget_callback_accounts()
    body = make_callback()
    assert_acknowledged(post(body))
    key = event_of(body).key
    assert recorded.board_keys("ds_cb_a") == [key]
    assert recorded.board_keys("ds_cb_a2") == [key]
    assert recorded.board("ds_cb_b") is None
    assert [e["dropbox_sign_conn_id"] for e in recorded.asset_events()] == ["ds_cb_a"]
    # A redelivery is one for each of them.
    assert_acknowledged(post(body))
    assert recorded.board_keys("ds_cb_a2") == [key]
    assert len(recorded.asset_events()) == 1
    forget_callback_accounts()
    recorded.forget_board("ds_cb_a2")
