"""
The clean-up DAG over its cap with ``over_cap="ask"``: a person approves or rejects in the Airflow UI
(answered through the REST API's handler while ``dag.test()`` runs), and the run cancels everything
found, nothing, or nothing and fails, against the emulator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.helpers import (
    CLEANUP_DAG,
    DAY,
    ApprovalAnswer,
    load_dag_module,
    make_requests,
    run_answered,
    task_states,
    xcom_of,
)

#: A small cap, so that five stale requests are over it.
CAP = 3
ASK = {"max_cancellations": CAP, "over_cap": "ask"}


class Stale:
    """Five stale requests, each with its own title and age (oldest first), and one fresh one."""

    def __init__(self, emulator: DropboxSignEmulator) -> None:
        now = time.time()
        self.emulator = emulator
        self.titles = [f"Old NDA {n}" for n in range(1, 6)]
        self.ids = [
            make_requests(emulator, 1, created_at=now - (90 - n) * DAY, title=title)[0]
            for n, title in enumerate(self.titles)
        ]
        self.fresh = make_requests(emulator, 1, created_at=now - DAY, title="Fresh NDA")

    def states(self) -> dict[str, str]:
        return {sr_id: self.emulator.get_state(sr_id) for sr_id in self.ids + self.fresh}

    def cancel_posts(self) -> list[str]:
        """The path of every cancel call the emulator received, in order."""
        return [entry.path for entry in self.emulator.requests_log if "/cancel/" in entry.path]


@pytest.fixture
def stale(emulator: DropboxSignEmulator, dropbox_sign_conn: str) -> Stale:
    return Stale(emulator)


class _Stopped(Exception):
    pass


class RejectIfAsked(ApprovalAnswer):
    """
    Rejects the clean-up's approval if a run asks for one, until stopped. A run that must ask nobody
    but did would otherwise wait for ever for an answer (dag.test() runs no time-out sweep).
    """

    def __init__(self) -> None:
        super().__init__(CLEANUP_DAG, "approve", "Reject", user="nobody-should-be-asked", timeout=600)
        self.stopped = threading.Event()

    def _parked(self) -> Any:
        if self.stopped.is_set():
            raise _Stopped
        return super()._parked()

    def run(self) -> None:
        try:
            self._answer()
        except _Stopped:
            pass
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


@pytest.fixture
def asks_nobody(airflow_db: Path) -> Iterator[RejectIfAsked]:
    """Fails the test when the run asked for approval (after rejecting, so that the run ends)."""
    watcher = RejectIfAsked()
    watcher.start()
    yield watcher
    watcher.stop()
    assert watcher.error is None, watcher.error
    assert watcher.detail is None, f"the run asked for approval: {watcher.detail}"


def untouched(stale: Stale) -> dict[str, str]:
    return dict.fromkeys(stale.ids + stale.fresh, "awaiting_signature")


def test_approved_cancels_every_request_found(stale: Stale, armed: None, cleanup_dag: Any) -> None:
    dag_run, form = run_answered(cleanup_dag, ASK, ApprovalAnswer(CLEANUP_DAG, "approve", "Approve"))

    assert dag_run.state == "success", task_states(dag_run)
    # The form said how many, the cap, and showed each request (all five fit in the sample).
    body = form["body"]
    assert form["options"] == ["Approve", "Reject"]
    assert form["defaults"] == ["Reject"]
    assert body.startswith("**Approve cancels 5 signature requests: this cannot be undone.**")
    assert "Selected by: from:me AND complete:false AND created:\\[\\* TO " in body
    for sr_id, title in zip(stale.ids, stale.titles, strict=True):
        assert f"**{title}**: **will be cancelled** if you approve" in body
        assert f"- id: `{sr_id}`" in body
    assert body.index(stale.titles[0]) < body.index(stale.titles[-1])
    assert "Fresh NDA" not in body
    # Every stale request was cancelled, once, and the fresh one was left alone.
    assert stale.states() == {**dict.fromkeys(stale.ids, "canceled"), stale.fresh[0]: "awaiting_signature"}
    assert sorted(stale.cancel_posts()) == sorted(f"/v3/signature_request/cancel/{i}" for i in stale.ids)
    report = xcom_of(dag_run, "report")
    assert report["outcomes"] == dict.fromkeys(stale.ids, "canceled")
    assert report["decision"] == {
        "asked": True,
        "approved": True,
        "by": "reviewer",
        "said": "approved by reviewer",
    }


def test_rejected_cancels_nothing_and_says_who_rejected(
    stale: Stale, armed: None, cleanup_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    answer = ApprovalAnswer(CLEANUP_DAG, "approve", "Reject", user="carol")

    dag_run, _ = run_answered(cleanup_dag, ASK, answer)

    assert dag_run.state == "success", task_states(dag_run)
    states = task_states(dag_run)
    assert (states["approve"], states["cancel"], states["report"]) == (["success"], ["skipped"], ["success"])
    assert stale.cancel_posts() == []
    assert stale.states() == untouched(stale)
    report = xcom_of(dag_run, "report")
    assert report["outcomes"] == dict.fromkeys(stale.ids, "not_approved")
    assert report["counts"] == {"not_approved": 5}
    assert report["decision"]["said"] == "rejected by carol: nothing was cancelled"
    assert (report["decision"]["approved"], report["decision"]["by"]) == (False, "carol")
    said = capfd.readouterr()
    assert "rejected by carol: nothing was cancelled" in said.out + said.err


def test_no_answer_in_time_cancels_nothing_and_fails_the_run(
    stale: Stale, armed: None, approval_times_out: None, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = load_dag_module(CLEANUP_DAG).dag

    dag_run, _ = run_answered(dag, ASK, ApprovalAnswer(CLEANUP_DAG, "approve", None))

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert (states["approve"], states["cancel"], states["report"]) == (
        ["failed"],
        ["upstream_failed"],
        ["upstream_failed"],
    )
    assert stale.cancel_posts() == []
    assert stale.states() == untouched(stale)
    assert "Nobody answered the approval in time: nothing will be cancelled" in (capfd.readouterr().out)


def test_over_cap_with_fail_fails_before_cancelling_anything(
    stale: Stale, armed: None, cleanup_dag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    dag_run = cleanup_dag.test(run_conf={"max_cancellations": CAP, "over_cap": "fail"})

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["find"] == ["failed"]
    assert (states["approve"], states["cancel"], states["report"]) == (["upstream_failed"],) * 3
    assert stale.cancel_posts() == []
    out = capfd.readouterr().out
    assert (
        f"Selected 5 signature requests to cancel, more than max_cancellations={CAP}. Nothing was "
        "cancelled. Check the search ('from:me AND complete:false AND created:[* TO "
    ) in out
    assert (
        "with a dry run, raise max_cancellations (up to [dropbox_sign] max_cancellations=200), or ask "
        "for approval with over_cap='ask'."
    ) in out
    assert "human-in-the-loop" not in out


def test_under_the_cap_asks_nobody_and_cancels(
    stale: Stale, armed: None, cleanup_dag: Any, asks_nobody: RejectIfAsked
) -> None:
    dag_run = cleanup_dag.test(run_conf={"max_cancellations": 5, "over_cap": "ask"})

    assert dag_run.state == "success", task_states(dag_run)
    # It ran, and asked nobody: it hands on no grant.
    assert task_states(dag_run)["approve"] == ["success"]
    assert xcom_of(dag_run, "approve") is None
    assert stale.states() == {**dict.fromkeys(stale.ids, "canceled"), stale.fresh[0]: "awaiting_signature"}
    report = xcom_of(dag_run, "report")
    assert report["outcomes"] == dict.fromkeys(stale.ids, "canceled")
    assert report["decision"] == {"asked": False, "approved": None, "by": None, "said": "no approval needed"}


@pytest.mark.parametrize(
    ("arming", "dry_run"), [(None, False), ("True", True)], ids=["unarmed", "armed-dry-run"]
)
def test_a_run_that_cancels_nothing_asks_nobody_over_the_cap(
    stale: Stale,
    monkeypatch: pytest.MonkeyPatch,
    cleanup_dag: Any,
    asks_nobody: RejectIfAsked,
    arming: str | None,
    dry_run: bool,
) -> None:
    if arming is not None:
        monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", arming)

    dag_run = cleanup_dag.test(run_conf={**ASK, "dry_run": dry_run})

    assert dag_run.state == "success", task_states(dag_run)
    assert task_states(dag_run)["approve"] == ["success"]
    assert [entry for entry in stale.emulator.requests_log if entry.method == "POST"] == []
    assert stale.states() == untouched(stale)
    report = xcom_of(dag_run, "report")
    assert report["dry_run"] is True
    assert report["outcomes"] == dict.fromkeys(stale.ids, "would_cancel")
    assert report["decision"]["asked"] is False
    assert report["decision"]["said"] == "nobody was asked, as this run cancels nothing"
    assert report["why"].startswith("dry run" if dry_run else "NOT ARMED")


@pytest.mark.parametrize(
    ("arming", "dry_run"), [(None, False), ("True", True)], ids=["unarmed", "armed-dry-run"]
)
def test_a_run_that_cancels_nothing_lists_what_it_found_over_the_cap_instead_of_failing(
    stale: Stale,
    monkeypatch: pytest.MonkeyPatch,
    cleanup_dag: Any,
    arming: str | None,
    dry_run: bool,
) -> None:
    if arming is not None:
        monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", arming)

    dag_run = cleanup_dag.test(run_conf={"max_cancellations": CAP, "over_cap": "fail", "dry_run": dry_run})

    # What to check before raising the cap is what it lists: failing would show nothing.
    assert dag_run.state == "success", task_states(dag_run)
    assert [entry for entry in stale.emulator.requests_log if entry.method == "POST"] == []
    report = xcom_of(dag_run, "report")
    assert report["dry_run"] is True
    assert report["outcomes"] == dict.fromkeys(stale.ids, "would_cancel")
    assert report["listed"]["selected"] == len(stale.ids) > report["listed"]["cap"] == CAP
