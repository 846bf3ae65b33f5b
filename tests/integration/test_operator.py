"""The operator: its execute() called directly against the emulator."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from dropbox_sign_provider.links import details_url
from dropbox_sign_provider.operators.signature_request import (
    DEFAULT_MAX_CANCELLATIONS,
    CancelSignatureRequestOperator,
)
from dropbox_sign_provider.testing import DropboxSignEmulator, OddAnswer
from tests.helpers import (
    LINK_KEY,
    MISSING,
    FakeTI,
    calls,
    connection_uri_json,
    make_requests,
    operator,
    run,
)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten the hook's backoff waits, so its retries are spent at once."""
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda seconds: real_sleep(min(seconds, 0.01)))


# --- one id, many ids -----------------------------------------------------------------------------


def test_one_id_is_cancelled_and_linked(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    sr_id = make_requests(emulator, 1)[0]
    ti = FakeTI()
    assert run(operator(sr_id), ti) == {sr_id: "cancel_requested"}
    assert calls(emulator) == [("POST", sr_id, 200)]
    assert emulator.get_state(sr_id) == "cancel_requested"
    assert ti.xcoms == {LINK_KEY: details_url(sr_id)}
    assert ti.xcoms[LINK_KEY] == emulator.signature_requests()[0]["details_url"]


def test_duplicates_dropped_order_kept_each_id_cancelled_once(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    a, b, c = make_requests(emulator, 3)
    ti = FakeTI()
    result = run(operator([c, a, c, b, a]), ti)
    assert list(result) == [c, a, b]
    assert set(result.values()) == {"cancel_requested"}
    assert calls(emulator) == [("POST", c, 200), ("POST", a, 200), ("POST", b, 200)]
    assert ti.xcoms[LINK_KEY] == ""  # several requests: no single page to link to


def test_ids_as_a_typed_string(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    a, b = make_requests(emulator, 2)
    assert list(run(operator(f" {a},\n{b} ,{a}"))) == [a, b]


# --- a refused cancel: one GET decides ------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "outcome", "get_status"),
    [
        ("canceled", "already_canceled", 410),
        ("completed", "completed", 200),
        ("declined", "declined", 200),
    ],
)
def test_refused_cancel_accepted_outcomes(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, setup: str, outcome: str, get_status: int
) -> None:
    fields = {"completed": {"is_complete": True}, "declined": {"is_declined": True}}.get(setup, {})
    sr_id = emulator.create_signature_request(**fields)["signature_request_id"]
    if setup == "canceled":
        run(operator(sr_id, wait_for_confirmation=True))
        emulator.clear_log()
    assert run(operator(sr_id, on_completed="ignore")) == {sr_id: outcome}
    post_status = 410 if setup == "canceled" else 400
    assert calls(emulator) == [("POST", sr_id, post_status), ("GET", sr_id, get_status)]


@pytest.mark.parametrize(("setup", "status"), [("not_found", 404), ("forbidden", 403)])
def test_refused_cancel_failing_outcomes(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, setup: str, status: int
) -> None:
    sr_id = (
        MISSING
        if setup == "not_found"
        else emulator.create_signature_request(forbidden=True)["signature_request_id"]
    )
    ti = FakeTI()
    with pytest.raises(AirflowFailException, match=f"{sr_id}: {setup.replace('_', ' ')} \\({status}\\)"):
        run(operator(sr_id), ti)
    assert calls(emulator) == [("POST", sr_id, status), ("GET", sr_id, status)]
    assert ti.xcoms["outcomes"] == {sr_id: setup}


def test_completed_fails_by_default(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    sr_id = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    with pytest.raises(AirflowFailException, match=f"{sr_id}: completed before it could be cancelled"):
        run(operator(sr_id))
    assert emulator.get_state(sr_id) == "completed"


def test_conflict_counts_as_cancel_requested_without_a_get(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(error_rate=1.0, error_statuses=(409,))
    assert run(operator(sr_id)) == {sr_id: "cancel_requested"}
    assert calls(emulator) == [("POST", sr_id, 409)]


def test_refused_credentials(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DS_OLD_KEY", connection_uri_json(emulator.base_url, api_key="old"))
    sr_id = make_requests(emulator, 1)[0]
    with pytest.raises(AirflowFailException, match=f"{sr_id}: unauthorized \\(401\\)"):
        run(operator(sr_id, dropbox_sign_conn_id="ds_old_key"))
    assert emulator.get_state(sr_id) == "awaiting_signature"


# --- many ids, one failure ----------------------------------------------------------------------


def test_many_ids_every_one_processed_then_one_failure(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    plain = make_requests(emulator, 4)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    declined = emulator.create_signature_request(is_declined=True)["signature_request_id"]
    foreign = emulator.create_signature_request(forbidden=True)["signature_request_id"]
    ids = [plain[0], MISSING, plain[1], signed, foreign, plain[2], declined, plain[3]]
    ti = FakeTI()
    with pytest.raises(AirflowFailException) as failed:
        run(operator(ids), ti)
    message = str(failed.value)
    # One message, each failing id with its reason, none of the others.
    assert message.startswith(
        "Dropbox Sign cancellation failed: 4 cancel_requested, 1 completed, 1 declined, 1 forbidden, "
        "1 not_found; 4 failed: "
    )
    for sr_id, why in (
        (MISSING, "not found (404)"),
        (signed, "completed before it could be cancelled"),
        (foreign, "forbidden (403)"),
        (declined, "declined before it could be cancelled"),
    ):
        assert f"{sr_id}: {why}" in message
    for sr_id in plain:
        assert sr_id not in message
    # Every id was touched, in order, even after the first failure.
    posts = [sr_id for method, sr_id, _ in calls(emulator) if method == "POST"]
    assert posts == ids
    assert {emulator.get_state(i) for i in plain} == {"cancel_requested"}
    assert ti.xcoms["outcomes"] == {
        plain[0]: "cancel_requested",
        MISSING: "not_found",
        plain[1]: "cancel_requested",
        signed: "completed",
        foreign: "forbidden",
        plain[2]: "cancel_requested",
        declined: "declined",
        plain[3]: "cancel_requested",
    }


def test_no_verdict_is_retryable_and_named(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    # 402 on cancel and on GET: neither says what state the request is in.
    a, b = make_requests(emulator, 2)
    emulator.set_fault(error_rate=1.0, error_statuses=(402,))
    ti = FakeTI()
    with pytest.raises(AirflowException) as failed:
        run(operator([a, b, MISSING]), ti)
    assert not isinstance(failed.value, AirflowFailException)  # the task's retries apply
    for sr_id in (a, b, MISSING):
        assert f"{sr_id}: Dropbox Sign HTTP 402 payment_required" in str(failed.value)
    assert ti.xcoms["outcomes"] == dict.fromkeys([a, b, MISSING], "error")


def test_a_cancel_answered_by_a_redirect_is_an_error_not_a_cancellation(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    # Followed, the redirect would end at a call that answers 200 {}: read as "cancel queued".
    a, b = make_requests(emulator, 2)
    emulator.add_odd_answers(OddAnswer(302, {"Location": f"{emulator.url}/v3/account"}, method="POST"))
    ti = FakeTI()
    with pytest.raises(AirflowException) as failed:
        run(operator([a, b]), ti)
    assert f"{a}: Dropbox Sign HTTP 302 redirect" in str(failed.value)
    assert ti.xcoms["outcomes"] == {a: "error", b: "cancel_requested"}
    assert calls(emulator) == [("POST", a, 302), ("GET", a, 200), ("POST", b, 200)]
    assert emulator.get_state(a) == "awaiting_signature"


@pytest.mark.usefixtures("fast_backoff")
def test_outage_after_retries_is_retryable_and_spares_the_others(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    a, b = make_requests(emulator, 2)
    emulator.set_fault(error_rate=1.0, error_statuses=(500,))
    with pytest.raises(AirflowException) as failed:
        run(operator([a, b]))
    assert not isinstance(failed.value, AirflowFailException)
    assert f"{a}: Dropbox Sign HTTP 500" in str(failed.value)
    # Each id tried 1 + 5 times by the hook, none of them given up on unseen.
    assert [sr_id for _, sr_id, _ in calls(emulator)] == [a] * 6 + [b] * 6


# --- guards: the cap and bad ids -----------------------------------------------------------------


def test_max_cancellations_fails_before_anything(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    ids = make_requests(emulator, 3)
    with pytest.raises(AirflowFailException, match=r"Refusing to cancel 3 .* max_cancellations=2\. Nothing"):
        run(operator(ids, max_cancellations=2))
    assert emulator.requests_log == []
    # Duplicates do not count twice.
    assert list(run(operator([*ids[:2], ids[0]], max_cancellations=2))) == ids[:2]


def test_a_cap_of_zero_cancels_nothing_and_a_cap_equal_to_the_ids_cancels_them_all(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    ids = make_requests(emulator, 2)
    with pytest.raises(AirflowFailException, match=r"Refusing to cancel 1 .* max_cancellations=0\. Nothing"):
        run(operator(ids[:1], max_cancellations=0))
    assert emulator.requests_log == []
    # The cap is the most a task cancels: exactly that many is within it.
    assert list(run(operator(ids, max_cancellations=2))) == ids


@pytest.mark.parametrize(
    "rendered",
    ["ab" * 20 + ", ../etc/passwd", ["ab" * 20, "AB" * 20], "['abab', ", ["ab" * 20, ""], ["ab" * 20, 7]],
    ids=["path", "uppercase", "broken-list", "empty-in-list", "not-a-string"],
)
def test_invalid_rendered_ids_fail_before_any_request(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, rendered: Any
) -> None:
    task = operator("{{ params.ids }}")
    task.signature_request_ids = rendered  # what the template rendered to
    with pytest.raises(ValueError, match="signature_request_id"):
        run(task)
    assert emulator.requests_log == []


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_a_wait_given_as_timedelta_confirms(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    task = operator(
        sr_id,
        wait_for_confirmation=True,
        deferrable=deferrable,
        poke_interval=timedelta(milliseconds=100),
        timeout=timedelta(seconds=10),
        recancel_after=timedelta(seconds=5),
    )
    assert run(task) == {sr_id: "canceled"}


def test_the_cap_is_on_by_default_and_none_lifts_it(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    assert DEFAULT_MAX_CANCELLATIONS == 1000
    assert operator("ab" * 20).max_cancellations == DEFAULT_MAX_CANCELLATIONS
    too_many = [f"{n:040x}" for n in range(DEFAULT_MAX_CANCELLATIONS + 1)]
    with pytest.raises(AirflowFailException) as refused:
        run(operator(too_many))
    assert str(refused.value) == (
        "Refusing to cancel 1001 signature requests: more than max_cancellations=1000. Nothing was "
        "cancelled. Check the ids, or raise the cap (max_cancellations=None lifts it)."
    )
    assert emulator.requests_log == []
    assert operator(too_many, max_cancellations=None).max_cancellations is None


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_a_wait_shorter_than_recancel_after_is_accepted_and_said_once(
    emulator: DropboxSignEmulator,
    dropbox_sign_conn: str,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    task = CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids=sr_id,
        wait_for_confirmation=True,
        deferrable=deferrable,
        timeout=5,
        poke_interval=0.1,
    )
    assert run(task) == {sr_id: "canceled"}
    logged = capfd.readouterr()
    said = "timeout 5 s is not longer than recancel_after 3600 s: no re-cancel can happen within this timeout"
    assert (logged.out + logged.err).count(said) == 1


# --- dry run ------------------------------------------------------------------------------------


def test_dry_run_only_reads(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> None:
    plain, gone = make_requests(emulator, 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    declined = emulator.create_signature_request(is_declined=True)["signature_request_id"]
    foreign = emulator.create_signature_request(forbidden=True)["signature_request_id"]
    run(operator(gone, wait_for_confirmation=True))
    emulator.clear_log()
    result = run(operator([plain, gone, signed, declined, foreign, MISSING], dry_run=True))
    assert result == {
        plain: "would_cancel",
        gone: "already_canceled",
        signed: "completed",
        declined: "declined",
        foreign: "forbidden",
        MISSING: "not_found",
    }
    assert {method for method, _, _ in calls(emulator)} == {"GET"}
    assert len(emulator.requests_log) == 6
    assert emulator.get_state(plain) == "awaiting_signature"
    assert emulator.cancel_calls(plain) == 0


def test_dry_run_keeps_what_a_person_needs_to_approve(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    signers = [
        {
            "name": "Ann",
            "email_address": "ann@example.com",
            "status_code": "signed",
            "signed_at": 1_700_000_000,
        },
        ("Bob", "bob@example.com"),
    ]
    half = emulator.create_signature_request(title="NDA", created_at=1_690_000_000, signers=signers)
    signed = emulator.create_signature_request(title="Offer", is_complete=True)["signature_request_id"]
    ti = FakeTI()

    run(operator([half["signature_request_id"], signed, MISSING], dry_run=True), ti)

    first, *others = ti.xcoms["preview"]
    assert first == {
        "signature_request_id": half["signature_request_id"],
        "outcome": "would_cancel",
        "title": "NDA",
        "created_at": 1_690_000_000,
        "signers": [
            {
                "name": "Ann",
                "email_address": "ann@example.com",
                "status_code": "signed",
                "signed_at": 1_700_000_000,
            },
            {
                "name": "Bob",
                "email_address": "bob@example.com",
                "status_code": "awaiting_signature",
                "signed_at": None,
            },
        ],
    }
    assert [(p["signature_request_id"], p["outcome"], p["title"]) for p in others] == [
        (signed, "completed", "Offer"),
        (MISSING, "not_found", None),
    ]
    assert others[1]["signers"] == []
    assert emulator.cancel_calls(half["signature_request_id"]) == 0


def test_dry_run_reports_errors_instead_of_failing(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(error_rate=1.0, error_statuses=(400,))
    result = run(operator(sr_id, dry_run=True))
    assert result[sr_id].startswith("error: Dropbox Sign HTTP 400 bad_request")
    assert emulator.cancel_calls(sr_id) == 0


@pytest.mark.parametrize(
    ("rendered", "dry"),
    [(True, True), (False, False), ("true", True), ("false", False), (" FALSE\n", False), ("True", True)],
    ids=["True", "False", "true", "false", "FALSE-in-blanks", "True-text"],
)
def test_dry_run_as_rendered(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, rendered: Any, dry: bool
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    task = operator(sr_id, dry_run="{{ params.dry }}")
    assert "dry_run_setting" in task.template_fields
    task.dry_run_setting = rendered  # what the template rendered to
    assert task.is_dry_run is dry
    assert run(task) == {sr_id: "would_cancel" if dry else "cancel_requested"}
    assert calls(emulator) == ([("GET", sr_id, 200)] if dry else [("POST", sr_id, 200)])


@pytest.mark.parametrize("rendered", ["yes", "", "0", "None", "no"])
def test_a_dry_run_rendered_to_anything_else_fails_before_any_request(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, rendered: str
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    task = operator(sr_id, dry_run="{{ params.dry }}")
    task.dry_run_setting = rendered
    with pytest.raises(ValueError, match=f"dry_run {rendered!r} must be True or False"):
        run(task)
    assert emulator.requests_log == []


# --- waiting for confirmation -------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_wait_for_confirmation(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    first, second = make_requests(emulator, 2)
    signed = emulator.create_signature_request(is_complete=True)["signature_request_id"]
    emulator.set_fault(never_complete=1)  # the first cancels are lost: the wait must cancel again
    result = run(
        operator(
            [first, signed, second],
            wait_for_confirmation=True,
            deferrable=deferrable,
            on_completed="ignore",
            recancel_after=0.4,
        )
    )
    assert result == {first: "canceled", signed: "completed", second: "canceled"}
    assert [emulator.get_state(i) for i in (first, signed, second)] == ["canceled", "completed", "canceled"]
    assert [emulator.cancel_calls(i) for i in (first, signed, second)] == [2, 1, 2]


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_wait_for_confirmation_times_out(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    sr_id = make_requests(emulator, 1)[0]
    emulator.set_fault(never_complete=True)
    with pytest.raises(AirflowFailException, match=f"{sr_id}: cancellation not confirmed in time"):
        run(
            operator(
                sr_id,
                wait_for_confirmation=True,
                deferrable=deferrable,
                timeout=0.6,
                recancel_after=0.3,
                max_cancel_attempts=5,
            )
        )
    assert 2 <= emulator.cancel_calls(sr_id) <= 3


def test_wait_with_nothing_queued_returns_at_once(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str
) -> None:
    sr_id = emulator.create_signature_request(is_declined=True)["signature_request_id"]
    task = operator(sr_id, wait_for_confirmation=True, deferrable=True, on_completed="ignore")
    assert run(task) == {sr_id: "declined"}  # no deferral: the run() helper would have run a trigger


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pause", "outcome"), [(0.0, "cancel_requested"), (0.3, "already_canceled")])
def test_rerun_after_partial_progress(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, pause: float, outcome: str
) -> None:
    done, later = make_requests(emulator, 2)
    not_yet = "9" * 40
    task = operator([done, not_yet, later])
    with pytest.raises(AirflowFailException, match=f"{not_yet}: not found"):
        run(task)
    # The request becomes visible to the account; the task runs again.
    emulator.create_signature_request(signature_request_id=not_yet)
    time.sleep(pause)
    result = run(task)
    assert result == {done: outcome, not_yet: "cancel_requested", later: outcome}
    assert emulator.cancel_calls(done) == 2
    time.sleep(0.25)
    assert {emulator.get_state(i) for i in (done, not_yet, later)} == {"canceled"}


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-task", "deferrable"])
def test_a_failing_id_does_not_leave_the_queued_ones_unconfirmed(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, deferrable: bool
) -> None:
    queued = make_requests(emulator, 2)
    ti = FakeTI()
    task = operator([queued[0], MISSING, queued[1]], wait_for_confirmation=True, deferrable=deferrable)
    with pytest.raises(AirflowFailException, match=f"{MISSING}: not found \\(404\\)") as failed:
        run(task, ti)
    # The wait happened first: both queued cancellations are confirmed, and the report says so.
    assert [emulator.get_state(sr_id) for sr_id in queued] == ["canceled", "canceled"]
    assert "2 canceled" in str(failed.value)
    assert ti.xcoms["outcomes"][MISSING] == "not_found"
