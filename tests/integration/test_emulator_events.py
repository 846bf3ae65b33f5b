"""The emulator plays Dropbox Sign's side of events, delivered to a real receiver over loopback."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dropbox_sign_provider.events.callback import parse_callback
from dropbox_sign_provider.testing import CallbackAttempt, DropboxSignEmulator, event_hash
from dropbox_sign_provider.testing import emulator as emulator_package
from dropbox_sign_provider.testing.emulator import TransitionRefused, main
from tests.helpers import Receiver, non_loopback_address

KEY = "cb-key"
FAST = {"api_keys": (KEY, "other"), "cancel_delay": 0.05, "callback_retry_delay": 0.05}


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., DropboxSignEmulator]]:
    started: list[DropboxSignEmulator] = []

    def make(**kwargs: Any) -> DropboxSignEmulator:
        emulator = DropboxSignEmulator(**(FAST | kwargs)).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(make_emulator: Callable[..., DropboxSignEmulator], receiver: Receiver) -> DropboxSignEmulator:
    return make_emulator(callback_url=receiver.url)


def get(emulator: DropboxSignEmulator, request_id: str) -> requests.Response:
    return requests.get(f"{emulator.base_url}/signature_request/{request_id}", auth=(KEY, ""), timeout=10)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def assert_signed_by(payload: dict[str, Any], key: str) -> None:
    event = payload["event"]
    assert event["event_hash"] == event_hash(key, event["event_time"], event["event_type"])
    # The provider's own receiver agrees.
    assert parse_callback(json.dumps(payload)).verified_by(key)


# -- what is sent ------------------------------------------------------------------------------------


def test_a_cancellation_is_posted_as_multipart_with_one_json_field(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    request_id = emu.create_signature_request(title="NDA", metadata={"deal": "7"})["signature_request_id"]
    expected = emu.signature_requests()[0]
    requests.post(f"{emu.base_url}/signature_request/cancel/{request_id}", auth=("other", ""), timeout=10)
    (received,) = receiver.wait_for(1)
    assert received.content_type.startswith("multipart/form-data; boundary=")
    payload = received.payload()
    assert set(payload) == {"event", "signature_request"}
    event = payload["event"]
    assert set(event) == {"event_time", "event_type", "event_hash", "event_metadata"}
    assert event["event_type"] == "signature_request_canceled"
    assert isinstance(event["event_time"], str)
    assert abs(int(event["event_time"]) - time.time()) < 10
    # Signed with the first key, whichever key made the call.
    assert_signed_by(payload, KEY)
    assert not parse_callback(json.dumps(payload)).verified_by("other")
    assert event["event_metadata"] == {
        "related_signature_id": None,
        "reported_for_account_id": emu.account_id,
        "reported_for_app_id": None,
        "event_message": None,
    }
    del expected["state"]
    assert payload["signature_request"] == expected
    wait_for(lambda: emu.callback_events == [payload])


@pytest.mark.parametrize(
    ("transition", "event_type"),
    [
        ("decline", "signature_request_declined"),
        ("expire", "signature_request_expired"),
    ],
)
def test_each_transition_sends_its_event_with_the_request_as_get_answers_it(
    emu: DropboxSignEmulator, receiver: Receiver, transition: str, event_type: str
) -> None:
    signers = [("A", "a@example.com"), ("B", "b@example.com")]
    request_id = emu.create_signature_request(title="Lease", signers=signers)["signature_request_id"]
    returned = getattr(emu, transition)(request_id)
    (received,) = receiver.wait_for(1)
    payload = received.payload()
    assert payload["event"]["event_type"] == event_type
    assert_signed_by(payload, KEY)
    answered = get(emu, request_id).json()["signature_request"]
    assert payload["signature_request"] == answered == returned
    statuses = [signature["status_code"] for signature in answered["signatures"]]
    state = emu.get_state(request_id)
    if transition == "sign":
        assert (answered["is_complete"], statuses, state) == (True, ["signed", "signed"], "completed")
        assert all(signature["signed_at"] for signature in answered["signatures"])
    elif transition == "decline":
        assert (answered["is_declined"], statuses, state) == (
            True,
            ["declined", "awaiting_signature"],
            "declined",
        )
    else:
        assert answered["expires_at"] <= time.time()
        assert (statuses, state) == (["expired", "expired"], "awaiting_signature")


def test_a_decline_reports_the_signature_and_its_reason(emu: DropboxSignEmulator, receiver: Receiver) -> None:
    request_id = emu.create_signature_request()["signature_request_id"]
    declined = emu.decline(request_id, reason="Wrong address")
    payload = receiver.wait_for(1)[0].payload()
    signature = declined["signatures"][0]
    assert signature["decline_reason"] == "Wrong address"
    assert payload["event"]["event_metadata"]["related_signature_id"] == signature["signature_id"]
    assert payload["event"]["event_metadata"]["event_message"] == "Wrong address"


def events_of(payloads: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [
        (p["event"]["event_type"], p["event"]["event_metadata"]["related_signature_id"]) for p in payloads
    ]


def test_signing_one_signer_of_two_sends_signed_and_not_all_signed(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    signers = [("A", "a@example.com"), ("B", "b@example.com")]
    request_id = emu.create_signature_request(signers=signers)["signature_request_id"]
    returned = emu.sign(request_id, signer=0)
    first = returned["signatures"][0]["signature_id"]
    (received,) = receiver.wait_for(1)
    payload = received.payload()
    assert events_of([payload]) == [("signature_request_signed", first)]
    assert_signed_by(payload, KEY)
    answered = get(emu, request_id).json()["signature_request"]
    assert payload["signature_request"] == answered == returned
    assert answered["is_complete"] is False
    assert [s["status_code"] for s in answered["signatures"]] == ["signed", "awaiting_signature"]
    assert emu.get_state(request_id) == "awaiting_signature"
    time.sleep(0.3)
    assert len(receiver.received) == 1
    # Partly signed is still eligible for cancellation, as the notes say.
    cancel_url = f"{emu.base_url}/signature_request/cancel/{request_id}"
    cancel = requests.post(cancel_url, auth=(KEY, ""), timeout=10)
    assert cancel.status_code == 200, cancel.text


def test_the_last_signer_adds_all_signed_then_downloadable(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    signers = [("A", "a@example.com"), ("B", "b@example.com")]
    request_id = emu.create_signature_request(signers=signers)["signature_request_id"]
    first, second = (s["signature_id"] for s in emu.sign(request_id, signer=1)["signatures"])
    with pytest.raises(TransitionRefused, match=r"signer 1 of signature request .* has signed already"):
        emu.sign(request_id, signer=1)
    done = emu.sign(request_id, signer=0)
    payloads = [item.payload() for item in receiver.wait_for(4)]
    assert events_of(payloads) == [
        ("signature_request_signed", second),
        ("signature_request_signed", first),
        ("signature_request_all_signed", None),
        ("signature_request_downloadable", None),
    ]
    assert all(parse_callback(json.dumps(p)).verified_by(KEY) for p in payloads)
    assert [p["signature_request"]["is_complete"] for p in payloads] == [False, True, True, True]
    assert done["is_complete"] is True
    assert emu.get_state(request_id) == "completed"


def test_signing_everyone_at_once_sends_one_signed_per_signer_still_unsigned(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    signers = [("A", "a@example.com"), ("B", "b@example.com"), ("C", "c@example.com")]
    request_id = emu.create_signature_request(signers=signers)["signature_request_id"]
    ids = [s["signature_id"] for s in emu.sign(request_id, signer=1)["signatures"]]
    emu.sign(request_id)
    payloads = [item.payload() for item in receiver.wait_for(5)]
    assert events_of(payloads) == [
        ("signature_request_signed", ids[1]),
        ("signature_request_signed", ids[0]),
        ("signature_request_signed", ids[2]),
        ("signature_request_all_signed", None),
        ("signature_request_downloadable", None),
    ]
    answered = get(emu, request_id).json()["signature_request"]
    assert [s["status_code"] for s in answered["signatures"]] == ["signed"] * 3
    assert all(s["signed_at"] for s in answered["signatures"])
    assert (answered["is_complete"], answered["signing_url"]) == (True, None)


def test_callback_test_has_no_signature_request(emu: DropboxSignEmulator, receiver: Receiver) -> None:
    sent = emu.send_callback_test()
    payload = receiver.wait_for(1)[0].payload()
    assert payload == sent
    assert set(payload) == {"event"}
    assert payload["event"]["event_type"] == "callback_test"
    assert_signed_by(payload, KEY)


def test_without_a_callback_url_transitions_happen_and_nothing_is_sent(
    make_emulator: Callable[..., DropboxSignEmulator],
) -> None:
    emulator = make_emulator()
    request_id = emulator.create_signature_request()["signature_request_id"]
    emulator.sign(request_id)
    assert emulator.get_state(request_id) == "completed"
    with pytest.raises(RuntimeError, match="no callback_url is set"):
        emulator.send_callback_test()
    time.sleep(0.2)
    assert emulator.callback_attempts == []


def test_another_senders_request_sends_no_event_to_this_account(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    theirs = emu.create_signature_request(forbidden=True)["signature_request_id"]
    ours = emu.create_signature_request()["signature_request_id"]
    emu.decline(theirs)
    emu.decline(ours)
    receiver.wait_for(1)
    time.sleep(0.3)
    assert [p["signature_request"]["signature_request_id"] for p in receiver.payloads()] == [ours]


# -- transitions that make no sense ------------------------------------------------------------------


def test_transitions_that_make_no_sense_are_refused_naming_the_id_and_state(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    completed = emu.create_signature_request(is_complete=True)["signature_request_id"]
    declined = emu.create_signature_request(is_declined=True)["signature_request_id"]
    expired = emu.create_signature_request(expires_at=int(time.time()) - 5)["signature_request_id"]
    canceled = emu.create_signature_request()["signature_request_id"]
    requests.post(f"{emu.base_url}/signature_request/cancel/{canceled}", auth=(KEY, ""), timeout=10)
    with pytest.raises(TransitionRefused, match=rf"'{canceled}' is cancel_requested"):
        emu.sign(canceled)
    wait_for(lambda: emu.get_state(canceled) == "canceled")
    refusals = [
        (emu.sign, canceled, "is canceled"),
        (emu.decline, canceled, "is canceled"),
        (emu.expire, canceled, "is canceled"),
        (emu.sign, completed, "is completed"),
        (emu.decline, completed, "is completed"),
        (emu.expire, declined, "is declined"),
        (emu.sign, expired, "expired at"),
        (emu.expire, expired, "expired at"),
    ]
    for transition, request_id, state in refusals:
        with pytest.raises(ValueError, match=rf"signature request '{request_id}' {state}"):
            transition(request_id)
    with pytest.raises(KeyError, match="no signature request 'f00d'"):
        emu.sign("f00d")
    # Only the cancellation was an event.
    time.sleep(0.2)
    assert [p["event"]["event_type"] for p in receiver.payloads()] == ["signature_request_canceled"]
    assert emu.get_state(completed) == "completed"
    assert emu.get_state(declined) == "declined"


# -- retries -----------------------------------------------------------------------------------------


def test_retries_with_doubling_delays_until_exactly_the_acknowledgement(
    make_emulator: Callable[..., DropboxSignEmulator], make_receiver: Callable[..., Receiver]
) -> None:
    refusals = [
        (500, "oops"),
        (200, "OK"),
        (200, "Hello API Event Received!"),
        (201, "Hello API Event Received"),
    ]
    receiver = make_receiver(refusals)
    emulator = make_emulator(callback_url=receiver.url, callback_retry_delay=0.1)
    request_id = emulator.create_signature_request()["signature_request_id"]
    emulator.decline(request_id)
    received = receiver.wait_for(5)
    wait_for(lambda: len(emulator.callback_events) == 1)
    payloads = [item.payload() for item in received]
    assert all(payload == payloads[0] for payload in payloads)
    assert emulator.callback_events == [payloads[0]]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(received)]
    # Lower bounds only: a busy machine may wait longer, never shorter (2 ms for timer rounding).
    assert all(gap >= minimum - 0.002 for gap, minimum in zip(gaps, (0.1, 0.2, 0.4, 0.8), strict=True)), gaps
    attempts = emulator.callback_attempts
    assert [(a.attempt, a.status, a.acknowledged) for a in attempts] == [
        (1, 500, False),
        (2, 200, False),
        (3, 200, False),
        (4, 201, False),
        (5, 200, True),
    ]
    assert all(isinstance(a, CallbackAttempt) for a in attempts)
    assert {(a.event_type, a.signature_request_id) for a in attempts} == {
        ("signature_request_declined", request_id)
    }
    assert all(abs(a.time - time.time()) < 30 for a in attempts)
    assert [a.time for a in attempts] == sorted(a.time for a in attempts)


def test_gives_up_after_the_maximum_number_of_attempts(
    make_emulator: Callable[..., DropboxSignEmulator], make_receiver: Callable[..., Receiver]
) -> None:
    receiver = make_receiver([(503, "busy")] * 10)
    emulator = make_emulator(callback_url=receiver.url, callback_retry_delay=0.02, callback_max_attempts=3)
    emulator.decline(emulator.create_signature_request()["signature_request_id"])
    receiver.wait_for(3)
    time.sleep(0.5)
    assert len(receiver.received) == 3
    assert [(a.attempt, a.status) for a in emulator.callback_attempts] == [(1, 503), (2, 503), (3, 503)]
    assert emulator.callback_events == []


def test_an_unreachable_receiver_is_an_attempt_with_no_status(
    make_emulator: Callable[..., DropboxSignEmulator], make_receiver: Callable[..., Receiver]
) -> None:
    with Receiver() as gone:
        url = gone.url
    emulator = make_emulator(callback_url=url, callback_max_attempts=2)
    emulator.send_callback_test()
    wait_for(lambda: len(emulator.callback_attempts) == 2)
    assert [
        (a.event_type, a.signature_request_id, a.status, a.acknowledged) for a in emulator.callback_attempts
    ] == [("callback_test", None, 0, False)] * 2


def test_retry_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="callback_retry_delay"):
        DropboxSignEmulator(callback_retry_delay=-1)
    with pytest.raises(ValueError, match="callback_max_attempts"):
        DropboxSignEmulator(callback_max_attempts=0)
    with pytest.raises(ValueError, match="'ftp://x' is not an absolute http or https URL"):
        DropboxSignEmulator(callback_url="ftp://x")


# -- delivery faults ---------------------------------------------------------------------------------


def test_duplicate_delivers_each_event_twice(emu: DropboxSignEmulator, receiver: Receiver) -> None:
    emu.set_delivery_fault(duplicate=True)
    emu.decline(emu.create_signature_request()["signature_request_id"])
    receiver.wait_for(2)
    time.sleep(0.2)
    first, second = receiver.payloads()
    assert first == second
    assert_signed_by(first, KEY)
    wait_for(lambda: len(emu.callback_events) == 2)
    assert [a.attempt for a in emu.callback_attempts] == [1, 1]


def test_out_of_order_delivers_events_sent_together_newest_first(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    emu.set_delivery_fault(out_of_order=True)
    ids = [emu.create_signature_request()["signature_request_id"] for _ in range(3)]
    emu.decline(ids[0])
    emu.sign(ids[1])
    emu.expire(ids[2])
    receiver.wait_for(5)
    delivered = [
        (p["event"]["event_type"], p["signature_request"]["signature_request_id"])
        for p in receiver.payloads()
    ]
    assert delivered == [
        ("signature_request_expired", ids[2]),
        ("signature_request_downloadable", ids[1]),
        ("signature_request_all_signed", ids[1]),
        ("signature_request_signed", ids[1]),
        ("signature_request_declined", ids[0]),
    ]


def test_in_order_without_the_fault(emu: DropboxSignEmulator, receiver: Receiver) -> None:
    ids = [emu.create_signature_request()["signature_request_id"] for _ in range(3)]
    for request_id in ids:
        emu.decline(request_id)
    receiver.wait_for(3)
    assert [p["signature_request"]["signature_request_id"] for p in receiver.payloads()] == ids


def test_late_holds_each_event_before_its_first_attempt(emu: DropboxSignEmulator, receiver: Receiver) -> None:
    emu.set_delivery_fault(late=0.6)
    started = time.monotonic()
    emu.send_callback_test()
    time.sleep(0.3)
    assert receiver.received == []
    (received,) = receiver.wait_for(1)
    assert received.at - started >= 0.6


def test_forged_events_fail_verification_with_the_accounts_key(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    emu.set_delivery_fault(forged=True)
    emu.decline(emu.create_signature_request()["signature_request_id"])
    payload = receiver.wait_for(1)[0].payload()
    event = payload["event"]
    assert event["event_hash"] != event_hash(KEY, event["event_time"], event["event_type"])
    assert not parse_callback(json.dumps(payload)).verified_by(KEY)
    emu.set_delivery_fault()
    emu.send_callback_test()
    assert_signed_by(receiver.wait_for(2)[1].payload(), KEY)


def test_delivery_faults_are_checked_and_cleared_with_the_others(emu: DropboxSignEmulator) -> None:
    with pytest.raises(ValueError, match="late"):
        emu.set_delivery_fault(late=-1)
    with pytest.raises(ValueError, match="duplicate"):
        emu.set_delivery_fault(duplicate=1)  # type: ignore[arg-type]
    emu.set_delivery_fault(duplicate=True, late=2)
    assert emu.delivery_faults == {"duplicate": True, "out_of_order": False, "late": 2.0, "forged": False}
    emu.clear_faults()
    assert emu.delivery_faults == {"duplicate": False, "out_of_order": False, "late": 0.0, "forged": False}


# -- the callback URL --------------------------------------------------------------------------------


def test_put_account_sets_the_callback_url_as_dropbox_sign_does(
    make_emulator: Callable[..., DropboxSignEmulator], receiver: Receiver
) -> None:
    emulator = make_emulator()
    account = f"{emulator.base_url}/account"
    assert requests.get(account, auth=(KEY, ""), timeout=10).json()["account"]["callback_url"] is None
    updated = requests.put(account, json={"callback_url": receiver.url}, auth=(KEY, ""), timeout=10)
    assert updated.status_code == 200, updated.text
    assert updated.json() == requests.get(account, auth=(KEY, ""), timeout=10).json()
    assert updated.json()["account"]["callback_url"] == receiver.url == emulator.callback_url
    # Setting the URL sends a callback_test to it first, as Dropbox Sign does.
    test = receiver.wait_for(1)[0].payload()
    assert test["event"]["event_type"] == "callback_test"
    assert_signed_by(test, KEY)
    emulator.decline(emulator.create_signature_request()["signature_request_id"])
    assert receiver.wait_for(2)[1].payload()["event"]["event_type"] == "signature_request_declined"

    # Removing it sends nothing, not even a callback_test.
    form = requests.put(account, data={"callback_url": "", "locale": "fr-FR"}, auth=(KEY, ""), timeout=10)
    assert form.status_code == 200, form.text
    assert (form.json()["account"]["callback_url"], form.json()["account"]["locale"]) == (None, "fr-FR")
    emulator.decline(emulator.create_signature_request()["signature_request_id"])
    time.sleep(0.3)
    assert len(receiver.received) == 2


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"callback_url": "not a url"}, "callback_url"),
        ({"callback_url": 7}, "callback_url"),
        ({"callback_uri": "https://example.com/x"}, "callback_uri"),
        ({"account_id": "someone-else"}, "account_id"),
        ({"locale": ""}, "locale"),
        ([], None),
    ],
)
def test_put_account_refuses_bad_updates(
    make_emulator: Callable[..., DropboxSignEmulator], body: Any, named: str | None
) -> None:
    emulator = make_emulator(callback_url="https://localhost/kept")
    answer = requests.put(f"{emulator.base_url}/account", json=body, auth=(KEY, ""), timeout=10)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["error_name"] == "bad_request"
    assert error.get("error_path") == named
    assert emulator.callback_url == "https://localhost/kept"


def test_the_python_setter_checks_the_url(make_emulator: Callable[..., DropboxSignEmulator]) -> None:
    emulator = make_emulator()
    emulator.callback_url = "https://localhost/events"
    assert emulator.callback_url == "https://localhost/events"
    with pytest.raises(ValueError, match="not an absolute http or https URL"):
        emulator.callback_url = "localhost/events"
    emulator.callback_url = None
    assert emulator.callback_url is None


# -- callbacks stay on loopback ------------------------------------------------------------------------

BEYOND_LOOPBACK = [
    "https://example.com/events",
    "http://192.0.2.10/events",
    "http://10.0.0.1:8080/events",
    "http://169.254.169.254/latest/meta-data",
    "http://0.0.0.0:8080/events",
    "http://[2001:db8::1]/events",
    "http://[::ffff:192.0.2.10]/events",
    "http://localhost.example.com/events",
    "http://127.0.0.1.nip.io/events",
    "http://user@example.com/events",
]
ON_LOOPBACK = [
    "http://127.0.0.1:8080/events",
    "http://127.8.9.10/events",
    "http://[::1]:8080/events",
    "http://localhost/events",
    "https://LOCALHOST:8443/events",
]


@pytest.mark.parametrize("url", BEYOND_LOOPBACK)
def test_put_account_refuses_a_callback_url_beyond_loopback(
    make_emulator: Callable[..., DropboxSignEmulator], url: str
) -> None:
    emulator = make_emulator(callback_url="http://127.0.0.1:9/kept")
    answer = requests.put(
        f"{emulator.base_url}/account", json={"callback_url": url}, auth=(KEY, ""), timeout=10
    )
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    assert body["error"]["error_name"] == "bad_request"
    assert body["error"]["error_path"] == "callback_url"
    assert repr(url) in body["error"]["error_msg"]
    assert "--allow-remote-callbacks" in body["error"]["error_msg"]
    assert emulator.callback_url == "http://127.0.0.1:9/kept"
    account = requests.get(f"{emulator.base_url}/account", auth=(KEY, ""), timeout=10).json()["account"]
    assert account["callback_url"] == "http://127.0.0.1:9/kept"


@pytest.mark.parametrize("url", BEYOND_LOOPBACK)
def test_python_refuses_a_callback_url_beyond_loopback(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(url)) + ".*allow_remote_callbacks=True"):
        DropboxSignEmulator(callback_url=url)
    emulator = DropboxSignEmulator()
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        emulator.callback_url = url
    assert emulator.callback_url is None
    opted_in = DropboxSignEmulator(callback_url=url, allow_remote_callbacks=True)
    assert (opted_in.callback_url, opted_in.allow_remote_callbacks) == (url, True)


@pytest.mark.parametrize("url", ON_LOOPBACK)
def test_put_account_accepts_a_callback_url_on_loopback(
    make_emulator: Callable[..., DropboxSignEmulator], url: str
) -> None:
    emulator = make_emulator()
    answer = requests.put(
        f"{emulator.base_url}/account", json={"callback_url": url}, auth=(KEY, ""), timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["account"]["callback_url"] == url == emulator.callback_url
    assert emulator.allow_remote_callbacks is False


@pytest.fixture
def remote_address() -> str:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback to listen on")
    return address


@pytest.fixture
def localhost_is(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Makes the system resolver answer ``localhost`` with another address, as /etc/hosts could."""
    system = socket.getaddrinfo

    def point(address: str) -> None:
        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            return system(address if host == "localhost" else host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    return point


@pytest.mark.parametrize("opted_in", [False, True], ids=["loopback-only", "allow-remote-callbacks"])
def test_delivery_resolves_localhost_and_never_leaves_loopback(
    make_emulator: Callable[..., DropboxSignEmulator],
    make_receiver: Callable[..., Receiver],
    remote_address: str,
    localhost_is: Callable[[str], None],
    opted_in: bool,
) -> None:
    outside = make_receiver(host=remote_address)
    opt_in = {"allow_remote_callbacks": True} if opted_in else {}
    emulator = make_emulator(callback_max_attempts=2, **opt_in)
    # Accepted as localhost (set directly: PUT /account would send its callback_test at once);
    # by delivery time the name resolves beyond loopback.
    emulator.callback_url = f"http://localhost:{outside.port}/callback"
    localhost_is(remote_address)
    emulator.send_callback_test()
    if opted_in:
        # The receiver is reachable: without the opt-in, nothing but the check keeps events from it.
        assert outside.wait_for(1)[0].payload()["event"]["event_type"] == "callback_test"
        wait_for(lambda: len(emulator.callback_attempts) == 1)
        assert emulator.callback_attempts[0].acknowledged
    else:
        wait_for(lambda: len(emulator.callback_attempts) >= 1)
        time.sleep(0.3)
        assert outside.received == []
        wait_for(lambda: len(emulator.callback_attempts) == 2)
        assert [(a.status, a.acknowledged) for a in emulator.callback_attempts] == [(0, False)] * 2


def test_delivery_does_not_follow_a_redirect_beyond_loopback(
    make_emulator: Callable[..., DropboxSignEmulator],
    make_receiver: Callable[..., Receiver],
    remote_address: str,
) -> None:
    outside = make_receiver(host=remote_address)
    redirecting = make_receiver([(307, "moved", {"Location": outside.url})] * 2)
    emulator = make_emulator(callback_url=redirecting.url, callback_max_attempts=2)
    emulator.send_callback_test()
    wait_for(lambda: len(emulator.callback_attempts) >= 1)
    time.sleep(0.3)
    assert outside.received == []
    wait_for(lambda: len(emulator.callback_attempts) == 2)
    assert [(a.status, a.acknowledged) for a in emulator.callback_attempts] == [(307, False)] * 2


@pytest.mark.parametrize("opted_in", [False, True], ids=["refused", "allow-remote-callbacks"])
def test_cli_callback_url_beyond_loopback_needs_the_flag(
    tmp_path: Path, make_receiver: Callable[..., Receiver], remote_address: str, opted_in: bool
) -> None:
    outside = make_receiver(host=remote_address)
    port_file = tmp_path / "port"
    flags = ["--allow-remote-callbacks"] if opted_in else []
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            emulator_package.__name__,
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--callback-url",
            outside.url,
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the emulator neither served nor exited"
            time.sleep(0.05)
        if opted_in:
            admin = f"http://127.0.0.1:{int(port_file.read_text())}/_emulator"
            assert requests.post(f"{admin}/callback_test", timeout=10).ok
            assert outside.wait_for(1)[0].payload()["event"]["event_type"] == "callback_test"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    if opted_in:
        assert process.returncode == 0, stderr
    else:
        assert process.returncode == 2, stdout
        assert repr(outside.url) in stderr
        assert "--allow-remote-callbacks" in stderr
        assert "Traceback" not in stderr
        assert outside.received == []


# -- admin API and command line ----------------------------------------------------------------------


def test_admin_api_drives_transitions_faults_and_reads_attempts(
    emu: DropboxSignEmulator, receiver: Receiver
) -> None:
    admin = emu.admin_url
    signed = emu.create_signature_request()["signature_request_id"]
    declined = emu.create_signature_request()["signature_request_id"]
    answer = requests.post(f"{admin}/signature_requests/{signed}/sign", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["is_complete"] is True
    again = requests.post(f"{admin}/signature_requests/{signed}/sign", timeout=10)
    assert again.status_code == 409
    assert signed in again.json()["error"]["error_msg"]
    assert "completed" in again.json()["error"]["error_msg"]
    assert requests.post(f"{admin}/signature_requests/f00d/expire", timeout=10).status_code == 404
    assert (
        requests.post(f"{admin}/signature_requests/{declined}/sign", json={"x": 1}, timeout=10).status_code
        == 400
    )
    for signer in (1, -1, "0"):
        refused = requests.post(
            f"{admin}/signature_requests/{declined}/sign", json={"signer": signer}, timeout=10
        )
        assert refused.status_code == 409, refused.text
        assert "signer must be an index from 0 to 0" in refused.json()["error"]["error_msg"]
    reason = requests.post(
        f"{admin}/signature_requests/{declined}/decline", json={"reason": "No"}, timeout=10
    )
    assert reason.json()["signatures"][0]["decline_reason"] == "No"

    faults = requests.post(f"{admin}/delivery_faults", json={"duplicate": True}, timeout=10)
    assert faults.json() == {"duplicate": True, "out_of_order": False, "late": 0.0, "forged": False}
    assert requests.post(f"{admin}/delivery_faults", json={"dupe": True}, timeout=10).status_code == 400
    assert requests.get(f"{admin}/delivery_faults", timeout=10).json()["duplicate"] is True
    sent = requests.post(f"{admin}/callback_test", timeout=10)
    assert sent.json()["event"]["event_type"] == "callback_test"
    assert requests.delete(f"{admin}/delivery_faults", timeout=10).json()["duplicate"] is False

    receiver.wait_for(6)
    wait_for(lambda: len(emu.callback_events) == 6)
    attempts = requests.get(f"{admin}/callback_attempts", timeout=10).json()
    assert sorted(a["event_type"] for a in attempts) == [
        "callback_test",
        "callback_test",
        "signature_request_all_signed",
        "signature_request_declined",
        "signature_request_downloadable",
        "signature_request_signed",
    ]
    assert set(attempts[0]) == set(CallbackAttempt._fields)
    assert all(a["acknowledged"] and a["status"] == 200 for a in attempts)
    assert len(requests.get(f"{admin}/callback_events", timeout=10).json()) == 6


def test_admin_callback_test_without_a_url_is_a_conflict(
    make_emulator: Callable[..., DropboxSignEmulator],
) -> None:
    emulator = make_emulator()
    answer = requests.post(f"{emulator.admin_url}/callback_test", timeout=10)
    assert answer.status_code == 409
    assert "callback_url" in answer.json()["error"]["error_msg"]


@pytest.mark.parametrize(
    "flags", [["--late-events", "-1"], ["--callback-max-attempts", "0"], ["--callback-url", "x"]]
)
def test_cli_refuses_bad_event_settings(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
