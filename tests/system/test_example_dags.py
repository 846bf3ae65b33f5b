"""
The example DAGs run end to end with ``dag.test()`` against the emulator: the clean-up (its batches,
query, arming, dry run, cap and failures) and the manual DAG (its cancel, wait and summary, and the
person who approves it first). How they parse and what their forms accept: tests/unit.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dropbox_sign_provider.cancellation.selection import summaries_of
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.compat import requires_airflow_3_3
from tests.helpers import (
    API_KEY,
    CANCEL_DAG,
    DAY,
    ApprovalAnswer,
    connection_uri_json,
    load_dag_module,
    make_requests,
    refusal,
    run_answered,
    task_states,
    xcom_of,
)

# --- the clean-up DAG under dag.test() --------------------------------------------------------------


class Account:
    """A small seeded account: what the clean-up must cancel and what it must leave alone."""

    def __init__(self, emulator: DropboxSignEmulator) -> None:
        now = time.time()
        self.emulator = emulator
        self.stale = make_requests(emulator, 3, created_at=now - 45 * DAY, title="NDA")
        self.stale_other = make_requests(emulator, 1, created_at=now - 100 * DAY, title="Invoice")
        self.expired = make_requests(emulator, 1, created_at=now - 3 * DAY, expires_at=now - 3600)
        self.fresh = make_requests(emulator, 2, created_at=now - 2 * DAY, title="NDA")
        self.fresh_expiring = make_requests(emulator, 1, created_at=now - DAY, expires_at=now + 7 * DAY)
        self.completed = make_requests(emulator, 1, created_at=now - 60 * DAY, is_complete=True)
        self.declined = make_requests(emulator, 1, created_at=now - 60 * DAY, is_declined=True)

    @property
    def to_cancel(self) -> list[str]:
        return self.stale + self.stale_other

    @property
    def to_keep(self) -> list[str]:
        # An expired request needs no cancel (nobody can sign it), and Dropbox Sign may refuse one.
        return self.expired + self.fresh + self.fresh_expiring + self.completed + self.declined

    def states(self, ids: list[str]) -> dict[str, str]:
        return {sr_id: self.emulator.get_state(sr_id) for sr_id in ids}

    def cancel_calls(self) -> int:
        return sum(1 for entry in self.emulator.requests_log if "/cancel/" in entry.path)


@pytest.fixture
def account(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> Account:
    return Account(emulator)


def test_cleanup_cancels_stale_requests_only(account: Account, armed: None, cleanup_dag: Any) -> None:
    dag_run = cleanup_dag.test(run_conf={})

    assert dag_run.state == "success", task_states(dag_run)
    assert account.states(account.to_cancel) == dict.fromkeys(account.to_cancel, "canceled")
    assert account.states(account.to_keep) == {
        **dict.fromkeys(account.expired + account.fresh + account.fresh_expiring, "awaiting_signature"),
        **dict.fromkeys(account.completed, "completed"),
        **dict.fromkeys(account.declined, "declined"),
    }
    for sr_id in account.to_keep:
        assert account.emulator.cancel_calls(sr_id) == 0
    report = xcom_of(dag_run, "report")
    assert report["dry_run"] is False
    assert report["outcomes"] == dict.fromkeys(account.to_cancel, "canceled")
    assert report["counts"] == {"canceled": len(account.to_cancel)}
    assert report["listed"]["selected"] == len(account.to_cancel)
    assert report["listed"]["search"].startswith("from:me AND complete:false AND created:[* TO ")
    selected = {s["signature_request_id"]: s["reason"] for s in summaries_of(xcom_of(dag_run, "find"))}
    assert selected == dict.fromkeys(account.to_cancel, "created more than 30 days ago")


def test_cleanup_cancels_in_batches_of_fifty(
    monkeypatch: pytest.MonkeyPatch, armed: None, cleanup_dag: Any
) -> None:
    # 51 requests need more than the default 100 calls a minute; this account allows more.
    with DropboxSignEmulator(api_keys=(API_KEY,), rate_limit=1000, cancel_delay=0.2) as big:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
            connection_uri_json(big.base_url, max_requests_per_minute=1000),
        )
        stale = make_requests(big, 51, created_at=time.time() - 40 * DAY)

        dag_run = cleanup_dag.test(run_conf={})

        assert dag_run.state == "success", task_states(dag_run)
        states = task_states(dag_run)
        assert states["cancel"] == ["success", "success"]
        batches = [
            dag_run.get_task_instance("cancel", map_index=i).xcom_pull(task_ids="cancel", map_indexes=i)
            for i in (0, 1)
        ]
        assert [len(batch) for batch in batches] == [50, 1]
        assert {sr_id for batch in batches for sr_id in batch} == set(stale)
        assert {outcome for batch in batches for outcome in batch.values()} == {"canceled"}
        assert {big.get_state(sr_id) for sr_id in stale} == {"canceled"}
        assert {big.cancel_calls(sr_id) for sr_id in stale} == {1}


def test_cleanup_honours_query_and_max_age(account: Account, armed: None, cleanup_dag: Any) -> None:
    dag_run = cleanup_dag.test(run_conf={"query": "title:NDA", "max_age_days": 1})

    assert dag_run.state == "success", task_states(dag_run)
    # title:NDA with a one-day cut-off: the stale NDAs and the two-day-old ones, nothing else.
    cancelled = account.stale + account.fresh
    assert account.states(cancelled) == dict.fromkeys(cancelled, "canceled")
    others = account.stale_other + account.expired + account.fresh_expiring
    assert account.states(others) == dict.fromkeys(others, "awaiting_signature")


def assert_nothing_cancelled(account: Account, report: dict[str, Any]) -> None:
    """The run cancelled nothing, sent no POST at all, and reported what it would cancel."""
    assert account.cancel_calls() == 0
    assert [entry for entry in account.emulator.requests_log if entry.method == "POST"] == []
    everything = account.to_cancel + account.fresh + account.fresh_expiring
    assert account.states(everything) == dict.fromkeys(everything, "awaiting_signature")
    assert report["dry_run"] is True
    assert report["outcomes"] == dict.fromkeys(account.to_cancel, "would_cancel")
    assert report["counts"] == {"would_cancel": len(account.to_cancel)}


@pytest.mark.parametrize("arming", [None, "True"], ids=["unarmed", "armed"])
def test_cleanup_dry_run_cancels_nothing_armed_or_not(
    account: Account, monkeypatch: pytest.MonkeyPatch, cleanup_dag: Any, arming: str | None
) -> None:
    if arming is not None:
        monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", arming)

    dag_run = cleanup_dag.test(run_conf={"dry_run": True})

    assert dag_run.state == "success", task_states(dag_run)
    report = xcom_of(dag_run, "report")
    assert_nothing_cancelled(account, report)
    assert report["why"] == "dry run: this run cancels nothing"


@pytest.mark.parametrize(
    ("armed_option", "variable"),
    [(None, None), ("False", None), (None, "true"), ("True", "false")],
    ids=["unset", "false", "a-variable-cannot-arm", "the-variable-disarms"],
)
def test_cleanup_cancels_nothing_until_the_deployment_arms_it(
    account: Account,
    monkeypatch: pytest.MonkeyPatch,
    cleanup_dag: Any,
    capfd: pytest.CaptureFixture[str],
    armed_option: str | None,
    variable: str | None,
) -> None:
    if armed_option is not None:
        monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", armed_option)
    if variable is not None:
        monkeypatch.setenv("AIRFLOW_VAR_DROPBOX_SIGN_CLEANUP_ARMED", variable)

    # A run with the default params, as the schedule makes it: dry_run is off.
    dag_run = cleanup_dag.test(run_conf={})

    assert dag_run.state == "success", task_states(dag_run)
    report = xcom_of(dag_run, "report")
    assert_nothing_cancelled(account, report)
    said = (
        "DISARMED: the Variable dropbox_sign_cleanup_armed is false"
        if variable == "false"
        else ("NOT ARMED: [dropbox_sign] armed is False")
    )
    assert report["why"].startswith(said)
    # Said in the logs of the list step and of the report, not only in the XCom.
    assert capfd.readouterr().out.count(said) >= 2


def test_cleanup_arming_takes_effect_at_the_next_run_without_a_reparse(
    account: Account, monkeypatch: pytest.MonkeyPatch, cleanup_dag: Any
) -> None:
    unarmed = cleanup_dag.test(run_conf={})
    assert_nothing_cancelled(account, xcom_of(unarmed, "report"))

    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", "True")
    armed_run = cleanup_dag.test(run_conf={})

    assert armed_run.state == "success", task_states(armed_run)
    assert xcom_of(armed_run, "report")["dry_run"] is False
    assert account.states(account.to_cancel) == dict.fromkeys(account.to_cancel, "canceled")


def test_cleanup_with_nothing_to_cancel_succeeds(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, armed: None, cleanup_dag: Any
) -> None:
    fresh = make_requests(emulator, 2, created_at=time.time() - DAY)

    dag_run = cleanup_dag.test(run_conf={})

    assert dag_run.state == "success", task_states(dag_run)
    states = task_states(dag_run)
    assert states["cancel"] == ["skipped"]
    report = xcom_of(dag_run, "report")
    assert (report["dry_run"], report["counts"], report["outcomes"]) == (False, {}, {})
    assert {emulator.get_state(sr_id) for sr_id in fresh} == {"awaiting_signature"}


def test_cleanup_guard_fails_before_cancelling_anything(
    account: Account, armed: None, cleanup_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    found = len(account.to_cancel)

    dag_run = cleanup_dag.test(run_conf={"max_cancellations": found - 1})

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["find"] == ["failed"]
    assert states["report"] == ["upstream_failed"]
    assert account.cancel_calls() == 0
    # The task log (printed by dag.test()) carries the reason, with the count.
    assert f"Selected {found} signature requests to cancel, more than max_cancellations={found - 1}" in (
        capfd.readouterr().out
    )


def confirmed_by_get(emulator: DropboxSignEmulator, sr_id: str) -> bool:
    """Whether a GET of ``sr_id`` answered 410: someone waited for the cancellation and saw it."""
    return any(
        entry.method == "GET" and entry.path == f"/v3/signature_request/{sr_id}" and entry.status == 410
        for entry in emulator.requests_log
    )


def test_cleanup_confirms_a_batch_even_when_one_of_its_ids_fails(
    account: Account, armed: None, cleanup_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    refused, *others = account.to_cancel
    account.emulator.add_odd_answers(refusal(403, refused, cancel=True, times=10))

    dag_run = cleanup_dag.test(run_conf={})

    assert dag_run.state == "failed"
    assert task_states(dag_run)["cancel"] == ["failed"]
    # Every other id of the batch was confirmed by its own GET before the batch failed...
    assert account.states(others) == dict.fromkeys(others, "canceled")
    assert all(confirmed_by_get(account.emulator, sr_id) for sr_id in others)
    assert account.emulator.get_state(refused) == "awaiting_signature"
    # ...and the failure names the refused id.
    assert f"{refused}: forbidden (403)" in capfd.readouterr().out


# --- the manual DAG under dag.test() ----------------------------------------------------------------


#: The manual DAG's form with approval off: with a deployment that allows it
#: (``approval_not_required``), the run cancels right after the preview.
UNASKED = {"require_approval": False}


@pytest.mark.usefixtures("approval_not_required")
def test_cancel_request_cancels_the_named_id(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, cancel_dag: Any
) -> None:
    target, bystander = make_requests(emulator, 2)

    dag_run = cancel_dag.test(run_conf={"signature_request_ids": [target], **UNASKED})

    assert dag_run.state == "success", task_states(dag_run)
    assert emulator.get_state(target) == "canceled"
    assert emulator.get_state(bystander) == "awaiting_signature"
    assert emulator.cancel_calls(target) == 1
    assert emulator.cancel_calls(bystander) == 0
    assert xcom_of(dag_run, "cancel") == {target: "canceled"}


@requires_airflow_3_3(
    "dag.test() before 3.3 takes about 2 s to start each task, so the first poll comes after the "
    "emulator's 1.5 s cancel delay and never sees the request still out for signature"
)
@pytest.mark.usefixtures("approval_not_required")
def test_cancel_request_waits_until_the_cancellation_is_confirmed(
    monkeypatch: pytest.MonkeyPatch, cancel_dag: Any
) -> None:
    with DropboxSignEmulator(api_keys=(API_KEY,), cancel_delay=1.5) as slow:
        monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(slow.base_url))
        (target,) = make_requests(slow, 1)

        dag_run = cancel_dag.test(run_conf={"signature_request_ids": [target], **UNASKED})

        assert dag_run.state == "success", task_states(dag_run)
        assert slow.get_state(target) == "canceled"
        assert xcom_of(dag_run, "cancel") == {target: "canceled"}
        polls = [entry.status for entry in slow.requests_log if entry.method == "GET"]
        # Still out for signature at the first check(s), then gone: confirm waited for it.
        assert polls[0] == 200
        assert polls[-1] == 410
        assert set(polls[:-1]) == {200}


@pytest.mark.usefixtures("approval_not_required")
def test_cancel_request_without_waiting_ends_once_queued(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, cancel_dag: Any
) -> None:
    (target,) = make_requests(emulator, 1)
    emulator.set_fault(never_complete=True)

    dag_run = cancel_dag.test(
        run_conf={"signature_request_ids": [target], "wait_for_confirmation": False, **UNASKED}
    )

    assert dag_run.state == "success", task_states(dag_run)
    assert emulator.get_state(target) == "cancel_requested"
    assert xcom_of(dag_run, "cancel") == {target: "cancel_requested"}
    # The preview's one read, then the cancel: nothing waited for the confirmation.
    assert [entry.method for entry in emulator.requests_log] == ["GET", "POST"]


@pytest.mark.usefixtures("approval_not_required")
def test_cancel_request_fails_on_a_signed_request_after_cancelling_the_rest(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, cancel_dag: Any
) -> None:
    (pending,) = make_requests(emulator, 1)
    (signed,) = make_requests(emulator, 1, is_complete=True)

    dag_run = cancel_dag.test(run_conf={"signature_request_ids": [pending, signed], **UNASKED})

    assert dag_run.state == "failed"
    assert task_states(dag_run)["cancel"] == ["failed"]
    assert emulator.get_state(pending) == "canceled"
    assert confirmed_by_get(emulator, pending)
    assert emulator.get_state(signed) == "completed"


@pytest.mark.usefixtures("approval_not_required")
def test_cancel_request_confirms_the_queued_id_when_another_is_unknown(
    emulator: DropboxSignEmulator, dropbox_sign_conn: str, cancel_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    (pending,) = make_requests(emulator, 1)
    unknown = "0d" * 20

    dag_run = cancel_dag.test(run_conf={"signature_request_ids": [pending, unknown], **UNASKED})

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["cancel"] == ["failed"]
    # The queued cancellation was confirmed (a GET saw the 410), though the other id fails the task.
    assert emulator.get_state(pending) == "canceled"
    assert confirmed_by_get(emulator, pending)
    assert f"{unknown}: not found (404)" in capfd.readouterr().out


# --- the manual DAG asks a person first -------------------------------------------------------------

SIGNED_BY_ANN = [
    {
        "name": "Ann Lee",
        "email_address": "ann@example.com",
        "status_code": "signed",
        "signed_at": 1_764_497_520,
    },
    {"name": "Bob Roe", "email_address": "bob@example.com"},
]


class Seeded:
    """Two requests out for signature (one half signed) and one signed by everyone."""

    def __init__(self, emulator: DropboxSignEmulator) -> None:
        self.emulator = emulator
        self.half = emulator.create_signature_request(title="NDA Acme", signers=SIGNED_BY_ANN)[
            "signature_request_id"
        ]
        (self.plain,) = make_requests(emulator, 1, title="Offer letter")
        (self.signed,) = make_requests(emulator, 1, title="Lease", is_complete=True)
        self.ids = [self.half, self.plain, self.signed]

    def posts(self) -> list[str]:
        return [entry.path for entry in self.emulator.requests_log if entry.method == "POST"]


@pytest.fixture
def seeded(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> Seeded:
    return Seeded(emulator)


def test_approved_cancels_what_the_form_showed(seeded: Seeded, cancel_dag: Any) -> None:
    conf = {"signature_request_ids": seeded.ids, "on_completed": "ignore"}

    dag_run, form = run_answered(cancel_dag, conf, ApprovalAnswer(CANCEL_DAG, "approve", "Approve"))

    assert dag_run.state == "success", task_states(dag_run)
    # The form named both requests that would go, who signed, and the one that would not.
    body = form["body"]
    assert form["options"] == ["Approve", "Reject"]
    assert form["defaults"] == ["Reject"]
    assert body.startswith("**Approve cancels 2 signature requests: this cannot be undone.**")
    assert "**NDA Acme**: **will be cancelled** if you approve" in body
    assert "Ann Lee (ann@example\\.com): **signed** 2025-11-30 10:12 UTC" in body
    assert "Bob Roe (bob@example\\.com): not signed (awaiting signature)" in body
    assert "**Offer letter**: **will be cancelled** if you approve" in body
    assert "**Lease**: signed by everyone: will not be cancelled" in body
    # Exactly those two were cancelled, once each, and confirmed.
    assert sorted(seeded.posts()) == sorted(
        f"/v3/signature_request/cancel/{sr_id}" for sr_id in (seeded.half, seeded.plain)
    )
    assert xcom_of(dag_run, "cancel") == {
        seeded.half: "canceled",
        seeded.plain: "canceled",
        seeded.signed: "completed",
    }
    assert xcom_of(dag_run, "approve")["approved_by"]["name"] == "reviewer"


def test_a_request_signed_after_the_preview_is_not_cancelled_and_the_run_says_so(
    seeded: Seeded, cancel_dag: Any
) -> None:
    conf = {"signature_request_ids": [seeded.half, seeded.plain], "on_completed": "ignore"}
    signed_meanwhile = ApprovalAnswer(
        CANCEL_DAG, "approve", "Approve", before_answer=lambda: seeded.emulator.sign(seeded.half)
    )

    dag_run, _ = run_answered(cancel_dag, conf, signed_meanwhile)

    assert dag_run.state == "success", task_states(dag_run)
    assert xcom_of(dag_run, "cancel") == {seeded.half: "completed", seeded.plain: "canceled"}
    assert seeded.emulator.get_state(seeded.half) == "completed"


def test_rejected_cancels_nothing_and_keeps_who_rejected(seeded: Seeded, cancel_dag: Any) -> None:
    # on_completed is left at fail: a request signed before anything was tried fails no rejection.
    conf = {"signature_request_ids": seeded.ids}

    dag_run, _ = run_answered(cancel_dag, conf, ApprovalAnswer(CANCEL_DAG, "approve", "Reject", user="carol"))

    assert dag_run.state == "success", task_states(dag_run)
    states = task_states(dag_run)
    assert (states["approve"], states["cancel"]) == (["success"], ["skipped"])
    assert seeded.posts() == []
    assert {seeded.emulator.get_state(i) for i in (seeded.half, seeded.plain)} == {"awaiting_signature"}
    answer = dag_run.get_task_instance("approve").xcom_pull(task_ids="approve", key="answer")
    assert (answer["chosen_options"], answer["responded_by_user"]["name"]) == (["Reject"], "carol")


class MarkedSuccess(ApprovalAnswer):
    """Someone marks the waiting approval successful instead of answering it (the UI's *Mark as success*)."""

    def _answer(self) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import update

        run_id, _ = self._wait_until_parked()
        with create_session() as session:
            session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.dag_id == self.dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == self.task_id,
                )
                .values(state="success")
            )


@requires_airflow_3_3(
    "dag.test() before 3.3 waits in line on the approval's trigger, and sees no state set from outside"
)
def test_an_approval_marked_successful_by_hand_cancels_nothing(
    seeded: Seeded, cancel_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    conf = {"signature_request_ids": [seeded.plain]}

    dag_run, _ = run_answered(cancel_dag, conf, MarkedSuccess(CANCEL_DAG, "approve", None))

    assert dag_run.state == "failed", task_states(dag_run)
    assert task_states(dag_run)["cancel"] == ["failed"]
    assert seeded.posts() == []
    assert seeded.emulator.get_state(seeded.plain) == "awaiting_signature"
    # No Approve, so no grant: cancel refused before its first POST.
    assert xcom_of(dag_run, "approve") is None


def test_no_answer_in_time_cancels_nothing_and_fails_the_run(
    seeded: Seeded, approval_times_out: None, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = load_dag_module(CANCEL_DAG).dag
    conf = {"signature_request_ids": seeded.ids, "on_completed": "ignore"}

    dag_run, _ = run_answered(dag, conf, ApprovalAnswer(CANCEL_DAG, "approve", None))

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert (states["approve"], states["cancel"]) == (["failed"], ["upstream_failed"])
    assert seeded.posts() == []
    assert xcom_of(dag_run, "cancel") is None
    assert "Nobody answered the approval in time: nothing will be cancelled" in capfd.readouterr().out


def test_nothing_to_approve_asks_nobody(seeded: Seeded, cancel_dag: Any) -> None:
    dag_run = cancel_dag.test(run_conf={"signature_request_ids": [seeded.signed], "on_completed": "ignore"})

    assert dag_run.state == "success", task_states(dag_run)
    assert task_states(dag_run)["approve"] == ["success"]
    assert xcom_of(dag_run, "approve") is None
    assert seeded.posts() == []
    assert xcom_of(dag_run, "cancel") == {seeded.signed: "completed"}
