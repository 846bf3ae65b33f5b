"""
End to end on a real Airflow deployment, driven through the Airflow UI in Chromium (``make e2e``).

1. Starts the Dropbox Sign emulator and a local Airflow (api-server, scheduler, dag-processor,
   triggerer; LocalExecutor; SQLite) in a throw-away ``AIRFLOW_HOME`` serving the repo's ``dags/``,
   and seeds a few signature requests.
2. In the browser: adds the ``dropbox_sign_default`` connection through Admin > Connections,
   checking the form shows the provider's labels and fields.
3. In the browser: opens ``dropbox_sign_cancel_request``, submits an invalid id (the form must
   refuse it), then two seeded ids, one of them signed by one of its two signers.
   Before that, points the account's callback URL at the API server's receiver (``PUT /v3/account``),
   checks that ``callback_test`` is acknowledged and a forged event refused, and unpauses
   ``dropbox_sign_cancellation_audit``.
4. When the run asks for approval, opens its approval form, waits until it shows both titles and
   who signed, screenshots it (``NN-approval-form.png``) and presses **Approve**.
5. Waits for the run to succeed and proves through the REST API that the cancel task was
   deferred to wait for its confirmations and that the deployment's triggerer did the waiting;
   that it confirmed event-first (``[dropbox_sign] event_first``),
   with one read of the id after the emulator's ``signature_request_canceled`` event; that the
   event became an asset event, whose audit DAG ran and confirmed the id (screenshot of the asset).
   A second run, with a third id, is rejected in its approval form (``NN-approval-rejected.png``):
   it skips the cancel and succeeds, and its approval says who rejected.
6. Checks in the emulator that exactly the two approved requests were cancelled and nothing else:
   the rejected id was read by the preview and never cancelled.
7. The clean-up DAG, unpaused once the connection exists: its first scheduled run (unpausing an
   ``@daily`` DAG without catch-up makes one) must cancel nothing while the deployment has not
   armed it, even with the Variable ``dropbox_sign_cleanup_armed`` set to ``true`` (a Variable
   cannot arm), and say ``NOT ARMED``; then, with every Airflow component restarted with
   ``[dropbox_sign] armed = True``, a triggered run cancels the stale requests and nothing else.
8. Checks that the API key reached no log.

Screenshots, component logs, task logs and JSON evidence go to ``build/e2e/``. Every process
started here is stopped by process group and session, on success, failure, Ctrl-C or SIGTERM.

Usage, from the repository's root: ``.venv/bin/python -m tests.e2e.single.run [--dags-folder DIR]
[--out DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from dropbox_sign_provider import get_provider_info

from ..harness import REPO
from ..harness.airflow import TERMINAL_RUN_STATES, Airflow
from ..harness.emulator import Emulator
from ..harness.lifecycle import Run
from ..harness.processes import Processes
from ..harness.steps import check, dump_json
from .checks import (
    ARMED_VARIABLE,
    AUDIT_DAG_ID,
    CANCEL_TASK_ID,
    CLEANUP_DAG_ID,
    CONN_ID,
    CONN_TYPE,
    DAG_ID,
    RUN_TIMEOUT_S,
    check_armed_run,
    check_connection,
    check_emulator,
    check_events,
    check_no_key_in_logs,
    check_outcomes,
    check_unarmed_first_run,
    connect_callbacks,
    prove_deferred,
    wait_for_success,
)
from .ui import CHROMIUM, UI, ConnectionForm

DAY = 86400
IDS_PARAM = "signature_request_ids"
APPROVAL_TASK_ID = "approve"
# Not a Dropbox Sign id: upper case and dashes, which the DAG's param pattern must refuse.
INVALID_ID = "NOT-A-DROPBOX-SIGN-ID"
HALF_SIGNED_TITLE = "E2E agreement 4 (half signed)"
# A whole run takes 1-2 minutes; past this something hangs, and the run must still clean up.
OVERALL_TIMEOUT_S = 540
# An approval waiting for its answer: awaiting_input from Airflow 3.3, deferred before.
WAITING_FOR_A_PERSON = ("awaiting_input", "deferred")

#: What the approval form of the approved run must show: both titles, and who signed the half-signed
#: request (the form's Markdown, as the UI renders it).
APPROVAL_FORM_SHOWS = [
    "E2E agreement 2",
    HALF_SIGNED_TITLE,
    "signers (1 of 2 signed)",
    "Ann Lee",
    "Bob Roe",
    "not signed (awaiting signature)",
    "Approve cancels 2 signature requests",
]


@dataclass
class Seeded:
    """
    Three ordinary, unsigned requests, and a fourth that one of its two signers has signed: the
    second and the fourth are cancelled, the third is rejected, the first is never named. And three
    stale ones, for the clean-up.
    """

    ids: list[str]
    stale: list[str]

    @property
    def approved(self) -> list[str]:
        return [self.ids[1], self.ids[3]]

    @property
    def rejected(self) -> str:
        return self.ids[2]

    @property
    def untouched(self) -> list[str]:
        return [sr_id for sr_id in self.ids if sr_id not in self.approved]


# -- steps ---------------------------------------------------------------------------------------


def seed(emulator: Emulator) -> Seeded:
    ids = emulator.seed(
        [
            *(
                {"title": f"E2E agreement {n}", "metadata": {"suite": "e2e", "n": str(n)}, "expires_at": None}
                for n in (1, 2, 3)
            ),
            {
                "title": HALF_SIGNED_TITLE,
                "expires_at": None,
                "signers": [
                    {"name": "Ann Lee", "email_address": "ann@example.com", "status_code": "signed"},
                    {"name": "Bob Roe", "email_address": "bob@example.com"},
                ],
            },
        ]
    )
    check(len(set(ids)) == 4, f"the emulator did not create four distinct requests: {ids}")
    # Sent 45 days ago and never signed: what the clean-up is for.
    stale = emulator.seed(
        [
            {
                "title": f"E2E stale contract {n}",
                "created_at": int(time.time()) - 45 * DAY,
                "expires_at": None,
            }
            for n in (1, 2, 3)
        ]
    )
    return Seeded(ids, stale)


def start_airflow(airflow: Airflow) -> dict[str, Any]:
    """Airflow up, and its three DAGs parsed; the manual DAG."""
    check(any(airflow.dags_folder.glob("*.py")), f"no DAG files in {airflow.dags_folder}")
    airflow.start()
    dag = airflow.wait_for_dag(DAG_ID, 120)
    airflow.wait_for_dag(CLEANUP_DAG_ID, 120)
    airflow.wait_for_dag(AUDIT_DAG_ID, 120)
    return dag


@contextlib.contextmanager
def browser(airflow: Airflow, out: Path, summary: dict[str, Any]) -> Iterator[UI]:
    """Chromium on the deployment; on a failure, the page as it was and the Playwright trace."""
    with sync_playwright() as playwright:
        ui = UI(playwright, airflow.url, out)
        failed = True
        try:
            yield ui
            failed = False
        finally:
            if failed:
                with contextlib.suppress(Exception):
                    summary["failure_page"] = [str(p) for p in ui.dump("failure-page")]
            with contextlib.suppress(Exception):
                ui.close(keep_trace=failed)


def add_connection(airflow: Airflow, emulator: Emulator, ui: UI) -> None:
    """Through the form, checking it shows the provider's fields; what it saved, through the API."""
    form = ConnectionForm.from_provider_info(get_provider_info(), CONN_TYPE)
    declared = {*form.relabeling.values(), *(spec["label"] for spec in form.conn_fields.values())}
    for label in ("API key", "Access token", "Requests per minute"):
        check(label in declared, f"the provider no longer declares the {label!r} field")
    ui.add_connection(form, CONN_ID, emulator.base_url, emulator.api_key)
    check_connection(airflow, emulator.base_url)
    # Only the deployment arms the clean-up: the Variable set to true must not.
    airflow.api("POST", "variables", json={"key": ARMED_VARIABLE, "value": "true"})
    # Unpaused now that it has a connection: its first scheduled run goes on beside the UI steps.
    airflow.unpause(CLEANUP_DAG_ID)


def trigger_in_form(airflow: Airflow, ui: UI, dag: dict[str, Any], approved: list[str]) -> str:
    """The trigger form refuses an invalid id, then takes the approved ones; the run's id."""
    ui.open_dag(DAG_ID, dag.get("dag_display_name") or DAG_ID)
    # The form's list field takes one id per line.
    run = ui.trigger(DAG_ID, IDS_PARAM, INVALID_ID, "\n".join(approved))
    run_id: str = run["dag_run_id"]
    check(
        run["conf"].get(IDS_PARAM) == approved,
        f"the run's conf holds {run['conf'].get(IDS_PARAM)!r}, expected {approved!r}",
    )
    runs = [r["dag_run_id"] for r in airflow.runs(DAG_ID)]
    check(runs == [run_id], f"only the valid trigger was to create a run; runs: {runs}")
    return run_id


def watch_run(
    airflow: Airflow, ui: UI, run_id: str, out: Path, summary: dict[str, Any], approve: Callable[[], Any]
) -> tuple[str, list[dict[str, Any]]]:
    """
    Poll the run's task instances until the run ends, recording every change of state; call
    ``approve`` once, when the approval first waits for a person; take a screenshot of the run page
    when the cancel task is first seen deferred (and note whether the page showed it: the deferral
    may end before the page has loaded, so that is evidence, not a check).

    :return: the run's final state and the timeline of task-instance states.
    """
    run_path = airflow.run_path(DAG_ID, run_id)
    timeline: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    deferred_shot = False
    answered = False
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT_S
    while True:
        airflow.processes.check_alive()
        now = {
            ti["task_id"]: {
                "state": ti["state"],
                "try_number": ti["try_number"],
                "trigger_classpath": (ti.get("trigger") or {}).get("classpath"),
                "trigger_id": (ti.get("trigger") or {}).get("id"),
                "triggerer_job_id": (ti.get("triggerer_job") or {}).get("id"),
            }
            for ti in airflow.task_instances(DAG_ID, run_id)
        }
        if now != last:
            timeline.append({"t": round(time.monotonic() - started, 2), "task_instances": now})
            last = now
            print(f"   t={timeline[-1]['t']:6.1f}s " + ", ".join(f"{k}={v['state']}" for k, v in now.items()))
            if not answered and (now.get(APPROVAL_TASK_ID) or {}).get("state") in WAITING_FOR_A_PERSON:
                answered = True
                summary["approval"] = approve()
            if not deferred_shot and (now.get(CANCEL_TASK_ID) or {}).get("state") == "deferred":
                deferred_shot = True
                ui.open_run(DAG_ID, run_id)
                summary["ui_showed_cancel_deferred"] = ui.shows_task_state(CANCEL_TASK_ID, "Deferred")
                ui.shot("run-cancel-deferred")
        state = airflow.api("GET", run_path)["state"]
        if state in TERMINAL_RUN_STATES:
            dump_json(out / "task-instance-timeline.json", timeline)
            return state, timeline
        if time.monotonic() > deadline:
            dump_json(out / "task-instance-timeline.json", timeline)
            raise TimeoutError(f"run {run_id} still {state} after {RUN_TIMEOUT_S} s; last states: {now}")
        time.sleep(0.25)


def answer_in_form(
    airflow: Airflow, ui: UI, run_id: str, expected: list[str], option: str, shot: str
) -> dict[str, Any]:
    """Press ``option`` in the run's approval form once it shows ``expected``; what Airflow kept."""
    airflow.wait_until_parked(DAG_ID, run_id, APPROVAL_TASK_ID)
    detail = ui.answer_approval(DAG_ID, run_id, APPROVAL_TASK_ID, expected, option, shot)
    check(
        detail.get("chosen_options") == [option],
        f"the form's answer was stored as {detail.get('chosen_options')!r}, not [{option!r}]",
    )
    return {"chosen_options": detail["chosen_options"], "form_showed": expected}


def approve_in_form(
    airflow: Airflow, ui: UI, run_id: str, out: Path, summary: dict[str, Any]
) -> dict[str, Any]:
    """Approve when the run asks; the run succeeds, and its cancel task waited on the triggerer."""
    state, timeline = watch_run(
        airflow,
        ui,
        run_id,
        out,
        summary,
        lambda: answer_in_form(airflow, ui, run_id, APPROVAL_FORM_SHOWS, "Approve", "approval-form"),
    )
    ui.open_run(DAG_ID, run_id)
    if state != "success":
        raise AssertionError(f"run {run_id} ended {state}; task states: {timeline[-1]}")
    ui.expect_run_state("success")
    ui.shot("run-success")
    return prove_deferred(airflow, run_id, timeline, out)


def reject_in_form(airflow: Airflow, ui: UI, dag: dict[str, Any], rejected: str, out: Path) -> dict[str, Any]:
    """
    Trigger the DAG with ``rejected``, press **Reject** in the approval form, and check that the
    run ends as a rejection: a success whose cancel was skipped, and whose approval kept the
    answer (Reject, and by whom) for a report.
    """
    ui.open_dag(DAG_ID, dag.get("dag_display_name") or DAG_ID)
    run = ui.trigger_again(DAG_ID, IDS_PARAM, rejected, "trigger-form-to-reject")
    run_id: str = run["dag_run_id"]

    def waiting() -> bool:
        ti = airflow.api("GET", airflow.run_path(DAG_ID, run_id, APPROVAL_TASK_ID))
        if airflow.api("GET", airflow.run_path(DAG_ID, run_id))["state"] in TERMINAL_RUN_STATES:
            raise AssertionError(f"run {run_id} ended before asking for approval")
        return ti["state"] in WAITING_FOR_A_PERSON

    airflow.wait_for(f"run {run_id} to ask for approval", waiting, RUN_TIMEOUT_S, 0.5)
    answer = answer_in_form(
        airflow,
        ui,
        run_id,
        ["E2E agreement 3", "Approve cancels 1 signature request"],
        "Reject",
        "approval-rejected",
    )
    wait_for_success(airflow, DAG_ID, run_id)
    tis = airflow.task_states(DAG_ID, run_id)
    check(tis.get(CANCEL_TASK_ID) == "skipped", f"the rejected run's cancel was not skipped: {tis}")
    kept = airflow.xcom(DAG_ID, run_id, APPROVAL_TASK_ID, "answer")
    check(
        kept.get("chosen_options") == ["Reject"] and bool((kept.get("responded_by_user") or {}).get("name")),
        f"the rejected run's approval kept the answer {kept!r}",
    )
    who = (kept.get("responded_by_user") or {}).get("name")
    approve_ti = airflow.api("GET", airflow.run_path(DAG_ID, run_id, APPROVAL_TASK_ID))
    said = [
        str(e.get("event", ""))
        for e in airflow.task_log(DAG_ID, run_id, APPROVAL_TASK_ID, approve_ti["try_number"])
    ]
    check(
        any(f"Rejected by {who}: nothing will be cancelled" in line for line in said),
        f"the rejected run's approve log does not say who rejected ({who})",
    )
    ui.open_run(DAG_ID, run_id)
    ui.expect_run_state("success")
    ui.shot("run-rejected")
    dump_json(out / "rejected-run.json", {"run_id": run_id, "task_states": tis, "answer": kept})
    return {"run_id": run_id, "answer": answer, "task_states": tis, "kept_answer": kept}


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--dags-folder", type=Path, default=REPO / "dags", help="DAGs folder (default: dags/)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "build" / "e2e", help="artefacts (default: build/e2e/)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("E2E", args.out, OVERALL_TIMEOUT_S, "dropbox-sign-e2e-")
    log_dir = run.out / "logs"
    log_dir.mkdir()
    processes = Processes(log_dir, cwd=run.home)
    # A key per run, so that the leak check means something.
    emulator = Emulator(processes, f"e2e-{secrets.token_hex(16)}", run.home / "emulator.port")
    airflow = Airflow(
        processes,
        run.home,
        args.dags_folder.resolve(),
        log_dir,
        # The deployment confirms on Dropbox Sign's events; its fallback poll is further away than any
        # confirmation here, so each confirmation is the read an event woke.
        {"AIRFLOW__DROPBOX_SIGN__EVENT_FIRST": "True", "AIRFLOW__DROPBOX_SIGN__POKE_INTERVAL": "240"},
    )
    summary = run.summary
    summary["dags_folder"] = str(airflow.dags_folder)
    with run.guarded(processes.stop):
        check(
            Path(CHROMIUM).is_file(),
            f"{CHROMIUM} is missing: install Debian's Chromium first (apt-get install -y chromium)",
        )
        with run.step("start the emulator and seed signature requests"):
            # Airflow 3.3.2 can fail a deferred task whose trigger fires within seconds of its deferral
            # (the executor's late report of the deferring try reads as a state changed externally:
            # apache/airflow#67287); confirmations that take longer than that report keep the run clean.
            emulator.start(cancel_delay=10.0)
            seeded = seed(emulator)
            summary.update(emulator=emulator.base_url, seeded=seeded.ids, stale=seeded.stale)
            summary.update(cancelled=seeded.approved, rejected=seeded.rejected)
        with run.step("start Airflow and wait until healthy"):
            dag = start_airflow(airflow)
            summary["airflow"] = airflow.url
        with browser(airflow, run.out, summary) as ui:
            with run.step("UI: add the Dropbox Sign connection"):
                add_connection(airflow, emulator, ui)
            with run.step("events: the account's callback URL set to the API server's receiver"):
                summary["callbacks"] = connect_callbacks(airflow, emulator)
                airflow.unpause(AUDIT_DAG_ID)
            with run.step("UI: trigger the DAG (invalid id refused, then two seeded ids)"):
                run_id = summary["run_id"] = trigger_in_form(airflow, ui, dag, seeded.approved)
            with run.step("approve in the form; prove the cancel task waited on the triggerer"):
                summary["deferral"] = approve_in_form(airflow, ui, run_id, run.out, summary)
            with run.step("events: one read after the event; the asset event; the audit DAG ran"):
                summary["events"] = check_events(airflow, emulator, ui, run_id, seeded.approved[0], run.out)
            with run.step("UI: a second run, rejected in its approval form, cancels nothing"):
                summary["rejected_run"] = reject_in_form(airflow, ui, dag, seeded.rejected, run.out)
        with run.step("the run's results; exactly the approved requests cancelled"):
            summary["results"] = check_outcomes(airflow, run_id, seeded.approved)
            check_emulator(emulator, seeded.ids, seeded.stale, seeded.approved, seeded.rejected, run.out)
        with run.step("clean-up: its first scheduled run, unarmed, cancels nothing"):
            summary["cleanup_unarmed"] = check_unarmed_first_run(airflow, emulator, seeded.stale, run.out)
        with run.step("clean-up: Airflow restarted armed, a triggered run cancels the stale requests only"):
            summary["cleanup_armed"] = check_armed_run(
                airflow, emulator, seeded.stale, seeded.untouched, run.out
            )
        with run.step("the key in no log"):
            summary["log_files_checked_for_key"] = check_no_key_in_logs(log_dir, emulator.api_key)
    if run.failures:
        shots = ", ".join(p.name for p in sorted(run.out.glob("*.png"))) or "none"
        print(f"  screenshots: {shots}", file=sys.stderr)
        print(f"  component logs: {log_dir}/*.log; task logs: {log_dir / 'tasks'}", file=sys.stderr)
        if (run.out / "trace.zip").exists():
            print(
                f"  browser trace: {run.out / 'trace.zip'} (.venv/bin/playwright show-trace)", file=sys.stderr
            )
    return run.verdict("the approved requests cancelled, the rejected one and the rest untouched")


if __name__ == "__main__":
    sys.exit(main())
