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
5. Waits for the run to succeed and proves through the REST API that the sensor task was
   deferred and that the deployment's triggerer did the waiting; that it confirmed event-first,
   with one read of the id after the emulator's ``signature_request_canceled`` event; that the
   event became an asset event, whose audit DAG ran and confirmed the id (screenshot of the asset).
   A second run, with a third id, is rejected in its approval form (``NN-approval-rejected.png``)
   and ends saying so.
6. Checks in the emulator that exactly the two approved requests were cancelled and nothing else:
   the rejected id was read by the preview and never cancelled.
7. The clean-up DAG, unpaused once the connection exists: its first scheduled run (unpausing an
   ``@daily`` DAG without catch-up makes one) must cancel nothing while the Variable
   ``dropbox_sign_cleanup_armed`` is unset, and say ``NOT ARMED``; then, with the Variable set to
   ``true``, a triggered run cancels the stale requests and nothing else.
8. Checks that the API key reached no log.

Screenshots, component logs, task logs and JSON evidence go to ``build/e2e/``. Every process
started here is stopped by process group, on success, failure, Ctrl-C or SIGTERM.

Usage: ``.venv/bin/python tests/e2e/run.py [--dags-folder DIR] [--out DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests
from playwright.sync_api import sync_playwright
from stack import REPO, Stack, StackError, dump_json
from ui import CHROMIUM, UI, ConnectionForm

from dropbox_sign_provider import get_provider_info
from dropbox_sign_provider.events.callback import CALLBACK_ACKNOWLEDGEMENT, event_hash

DAG_ID = "dropbox_sign_cancel_request"
CLEANUP_DAG_ID = "dropbox_sign_expiry_cleanup"
AUDIT_DAG_ID = "dropbox_sign_cancellation_audit"
CANCELED_ASSET_URI = "dropbox-sign://dropbox_sign_default/signature_request_canceled"
# The async hook's HTTP client names itself so in ``User-Agent``; the sync hook's says python-requests.
TRIGGERER_CLIENT = "aiohttp"
CALLBACK_PATH = "/dropbox-sign/callback"
ARMED_VARIABLE = "dropbox_sign_cleanup_armed"
DAY = 86400
IDS_PARAM = "signature_request_ids"
SENSOR_TASK_ID = "confirm"
APPROVAL_TASK_ID = "approve"
OUTCOME_TASK_IDS = (SENSOR_TASK_ID, "summary")
TRIGGER_CLASSPATH = "dropbox_sign_provider.triggers.signature_request.SignatureRequestCanceledTrigger"
CONN_ID = "dropbox_sign_default"
CONN_TYPE = "dropbox_sign"
# Not a Dropbox Sign id: upper case and dashes, which the DAG's param pattern must refuse.
INVALID_ID = "NOT-A-DROPBOX-SIGN-ID"
HALF_SIGNED_TITLE = "E2E agreement 4 (half signed)"
# A whole run takes 1-2 minutes; past this something hangs, and the run must still clean up.
OVERALL_TIMEOUT_S = 540
RUN_TIMEOUT_S = 300
TERMINAL_RUN_STATES = {"success", "failed"}
# An approval waiting for its answer: awaiting_input from Airflow 3.3, deferred before.
WAITING_FOR_A_PERSON = ("awaiting_input", "deferred")


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind through the ``finally`` blocks that stop the processes."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGALRM:
        raise TimeoutError(f"the end-to-end run took longer than {OVERALL_TIMEOUT_S} s")
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


class Timer:
    """Wall-clock time of each phase, printed as it ends and kept for ``summary.json``."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = round(time.monotonic() - start, 1)
            print(f"   {name}: {self.phases[name]} s", flush=True)

    @property
    def total(self) -> float:
        return round(time.monotonic() - self.started, 1)


def check(condition: bool, message: str) -> None:
    """Fail the run with ``message`` unless ``condition`` holds (works under ``python -O`` too)."""
    if not condition:
        raise AssertionError(message)


# -- steps ---------------------------------------------------------------------------------------


def seed(stack: Stack) -> list[str]:
    """
    Three ordinary, unsigned requests, and a fourth that one of its two signers has signed: the
    second and the fourth are cancelled, the third is rejected, the first is never named.
    """
    created = stack.admin(
        "POST",
        "signature_requests",
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
        ],
    )
    ids = [item["signature_request_id"] for item in created]
    check(len(set(ids)) == 4, f"the emulator did not create four distinct requests: {ids}")
    return ids


def seed_stale(stack: Stack) -> list[str]:
    """Three requests sent 45 days ago and never signed: what the clean-up is for."""
    created = stack.admin(
        "POST",
        "signature_requests",
        [
            {
                "title": f"E2E stale contract {n}",
                "created_at": int(time.time()) - 45 * DAY,
                "expires_at": None,
            }
            for n in (1, 2, 3)
        ],
    )
    return [item["signature_request_id"] for item in created]


def wait_for_dag(stack: Stack, dag_id: str = DAG_ID) -> dict[str, Any]:
    """The DAG once the dag-processor has serialized it; fails fast on its import error."""

    def probe() -> dict[str, Any] | None:
        errors = stack.api("GET", "importErrors")["import_errors"]
        for error in errors:
            if Path(error["filename"]).name == f"{dag_id}.py":
                raise StackError(f"{error['filename']} does not import:\n{error['stack_trace']}")
        response = stack.api_response("GET", f"dags/{dag_id}")
        dag: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return dag

    parsed: dict[str, Any] = stack.wait_for(f"the DAG {dag_id} to be parsed", probe, 120, 1.0)
    return parsed


def check_connection(stack: Stack, host: str) -> dict[str, Any]:
    """What the form saved, as the REST API reports it (the key itself is masked there)."""
    conn: dict[str, Any] = stack.api("GET", f"connections/{CONN_ID}")
    check(conn["conn_type"] == CONN_TYPE, f"saved conn_type {conn['conn_type']!r}, expected {CONN_TYPE!r}")
    check(conn["host"] == host, f"saved host {conn['host']!r}, expected {host!r}")
    check(bool(conn["password"]), "the saved connection has no API key")
    for hidden in ("login", "schema", "port"):
        check(conn[hidden] in (None, ""), f"the saved connection has a {hidden}: {conn[hidden]!r}")
    return conn


def watch_run(
    stack: Stack, ui: UI, run_id: str, out: Path, summary: dict[str, Any], approve: Callable[[], Any]
) -> tuple[str, list[dict[str, Any]]]:
    """
    Poll the run's task instances until the run ends, recording every change of state; call
    ``approve`` once, when the approval first waits for a person; take a screenshot of the run page
    when the sensor is first seen deferred (and note whether the page showed it: the deferral may
    end before the page has loaded, so that is evidence, not a check).

    :return: the run's final state and the timeline of task-instance states.
    """
    run_path = f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    timeline: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    deferred_shot = False
    answered = False
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT_S
    while True:
        stack.check_alive()
        tis = stack.api("GET", f"{run_path}/taskInstances")["task_instances"]
        now = {
            ti["task_id"]: {
                "state": ti["state"],
                "try_number": ti["try_number"],
                "trigger_classpath": (ti.get("trigger") or {}).get("classpath"),
                "trigger_id": (ti.get("trigger") or {}).get("id"),
                "triggerer_job_id": (ti.get("triggerer_job") or {}).get("id"),
            }
            for ti in tis
        }
        if now != last:
            timeline.append({"t": round(time.monotonic() - started, 2), "task_instances": now})
            last = now
            print(f"   t={timeline[-1]['t']:6.1f}s " + ", ".join(f"{k}={v['state']}" for k, v in now.items()))
            if not answered and (now.get(APPROVAL_TASK_ID) or {}).get("state") in WAITING_FOR_A_PERSON:
                answered = True
                summary["approval"] = approve()
            if not deferred_shot and (now.get(SENSOR_TASK_ID) or {}).get("state") == "deferred":
                deferred_shot = True
                ui.open_run(DAG_ID, run_id)
                summary["ui_showed_sensor_deferred"] = ui.shows_task_state(SENSOR_TASK_ID, "Deferred")
                ui.shot("run-sensor-deferred")
        state = stack.api("GET", run_path)["state"]
        if state in TERMINAL_RUN_STATES:
            dump_json(out / "task-instance-timeline.json", timeline)
            return state, timeline
        if time.monotonic() > deadline:
            dump_json(out / "task-instance-timeline.json", timeline)
            raise TimeoutError(f"run {run_id} still {state} after {RUN_TIMEOUT_S} s; last states: {now}")
        time.sleep(0.25)


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


def answer_in_form(ui: UI, run_id: str, expected: list[str], option: str, shot: str) -> dict[str, Any]:
    """Press ``option`` in the run's approval form once it shows ``expected``; what Airflow kept."""
    detail = ui.answer_approval(DAG_ID, run_id, APPROVAL_TASK_ID, expected, option, shot)
    check(
        detail.get("chosen_options") == [option],
        f"the form's answer was stored as {detail.get('chosen_options')!r}, not [{option!r}]",
    )
    return {"chosen_options": detail["chosen_options"], "form_showed": expected}


def reject_run(stack: Stack, ui: UI, rejected: str, out: Path) -> dict[str, Any]:
    """
    Trigger the DAG with ``rejected``, press **Reject** in the approval form, and check that the
    run ends as a rejection: a success whose summary reports ``not_approved`` and says who rejected.
    """
    run = ui.trigger_again(DAG_ID, IDS_PARAM, rejected, "trigger-form-to-reject")
    run_id: str = run["dag_run_id"]
    run_path = f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def waiting() -> bool:
        ti = stack.api("GET", f"{run_path}/taskInstances/{APPROVAL_TASK_ID}")
        if stack.api("GET", run_path)["state"] in TERMINAL_RUN_STATES:
            raise AssertionError(f"run {run_id} ended before asking for approval")
        return ti["state"] in WAITING_FOR_A_PERSON

    stack.wait_for(f"run {run_id} to ask for approval", waiting, RUN_TIMEOUT_S, 0.5)
    answer = answer_in_form(
        ui, run_id, ["E2E agreement 3", "Approve cancels 1 signature request"], "Reject", "approval-rejected"
    )
    wait_for_run(stack, DAG_ID, run_id)
    tis = {
        ti["task_id"]: ti["state"] for ti in stack.api("GET", f"{run_path}/taskInstances")["task_instances"]
    }
    check(tis.get("cancel") == "skipped", f"the rejected run's cancel was not skipped: {tis}")
    outcome = xcom_value(stack, DAG_ID, run_id, "summary")
    check(outcome == {rejected: "not_approved"}, f"the rejected run's summary returned {outcome!r}")
    said = [line for line in task_log(stack, run_id, "summary", 1) if "rejected by" in str(line)]
    check(bool(said), "the rejected run's summary log does not say who rejected")
    ui.open_run(DAG_ID, run_id)
    ui.expect_run_state("success")
    ui.shot("run-rejected")
    dump_json(out / "rejected-run.json", {"run_id": run_id, "task_states": tis, "summary": outcome})
    return {"run_id": run_id, "answer": answer, "task_states": tis, "summary": outcome}


def task_log(
    stack: Stack, run_id: str, task_id: str, try_number: int, dag_id: str = DAG_ID
) -> list[dict[str, Any]]:
    """A task try's log as structured events, merged by Airflow from the worker's and triggerer's files."""
    path = (
        f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
        f"/logs/{try_number}"
    )
    answer = stack.api("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
    content: list[dict[str, Any]] = answer["content"]
    return content


def prove_deferred(stack: Stack, run_id: str, timeline: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """
    Prove the sensor went through ``deferred`` and that this deployment's triggerer ran its trigger.

    Two independent signals, both required:

    * live: while the run was in progress the REST API reported the sensor's task instance as
      ``deferred``, holding a trigger of the provider's trigger class;
    * after the fact: the sensor try's log, as the REST API serves it, holds the task runner's
      "Pausing task as DEFERRED", and the triggerer's own "trigger ... starting" and "Trigger fired
      event" lines, read from a ``.trigger.<job id>.log`` file whose job id is a ``TriggererJob``
      of this deployment (and the same job the live signal showed, when it showed one).
    """
    sensor_states = [entry["task_instances"].get(SENSOR_TASK_ID, {}) for entry in timeline]
    deferred = [s for s in sensor_states if s.get("state") == "deferred"]
    check(
        bool(deferred),
        f"the REST API never showed {SENSOR_TASK_ID} deferred; its states were "
        f"{[s.get('state') for s in sensor_states]}",
    )
    classpaths = {s["trigger_classpath"] for s in deferred if s["trigger_classpath"]}
    check(
        classpaths == {TRIGGER_CLASSPATH},
        f"while deferred, {SENSOR_TASK_ID} held triggers {sorted(classpaths)}, expected {TRIGGER_CLASSPATH}",
    )
    live_jobs = {s["triggerer_job_id"] for s in deferred if s["triggerer_job_id"] is not None}

    ti = stack.api(
        "GET", f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{SENSOR_TASK_ID}"
    )
    events = task_log(stack, run_id, SENSOR_TASK_ID, ti["try_number"])
    dump_json(out / f"task-log-{SENSOR_TASK_ID}.json", events)
    messages = [str(event.get("event", "")) for event in events]
    trigger_files = {
        int(match.group(1)) for text in messages if (match := re.search(r"\.log\.trigger\.(\d+)\.log$", text))
    }
    from_triggerer = [
        str(event.get("event", "")) for event in events if event.get("filename") == "triggerer_job_runner.py"
    ]
    check(
        any(text.startswith("Pausing task as DEFERRED") for text in messages),
        f"the {SENSOR_TASK_ID} log never says the task was paused as DEFERRED",
    )
    check(
        any(re.match(r"trigger .* starting$", text) for text in from_triggerer),
        f"no triggerer line says the trigger started; triggerer lines: {from_triggerer}",
    )
    check(
        "Trigger fired event" in from_triggerer,
        f"no triggerer line says the trigger fired; triggerer lines: {from_triggerer}",
    )
    triggerer_jobs = {
        job["id"]: job for job in stack.api("GET", "jobs", params={"job_type": "TriggererJob"})["jobs"]
    }
    check(
        bool(trigger_files) and trigger_files <= set(triggerer_jobs),
        f"the trigger log came from job(s) {sorted(trigger_files)}, "
        f"not from this deployment's triggerer job(s) {sorted(triggerer_jobs)}",
    )
    check(
        live_jobs <= trigger_files,
        f"the API showed triggerer job(s) {sorted(live_jobs)} but the log came from {sorted(trigger_files)}",
    )
    return {
        "deferred_observations": len(deferred),
        "trigger_classpath": TRIGGER_CLASSPATH,
        "triggerer_job_ids": sorted(trigger_files),
        "triggerer_lines": from_triggerer,
    }


def xcom_value(stack: Stack, dag_id: str, run_id: str, task_id: str) -> Any:
    """A task's result (XCom ``return_value``), deserialized."""
    entry = stack.api(
        "GET",
        f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
        "/xcomEntries/return_value",
        params={"deserialize": "true"},
    )
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


def check_outcomes(stack: Stack, run_id: str, approved: list[str]) -> dict[str, Any]:
    """The sensor's and the summary's results (XCom): the approved ids, reported ``canceled``."""
    expected = dict.fromkeys(approved, "canceled")
    results: dict[str, Any] = {}
    for task_id in OUTCOME_TASK_IDS:
        entry = stack.api(
            "GET",
            f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
            "/xcomEntries/return_value",
            params={"deserialize": "true"},
        )
        value = entry["value"]
        if isinstance(value, str):
            value = json.loads(value)
        check(value == expected, f"{task_id} returned {value!r}, expected {expected!r}")
        results[task_id] = value
    return results


def check_emulator(
    stack: Stack, seeded: list[str], stale: list[str], approved: list[str], rejected: str, out: Path
) -> None:
    """
    Exactly the approved requests were cancelled, each by one accepted cancel call; the rejected
    one was read by its run's preview and nothing more; nothing else was touched. The stale
    requests may have been looked at by the unarmed clean-up, never cancelled.
    """
    requests_now = stack.admin("GET", "signature_requests")
    log = stack.admin("GET", "requests_log")
    dump_json(out / "emulator-signature-requests.json", requests_now)
    dump_json(out / "emulator-requests-log.json", log)

    states = {item["signature_request_id"]: item["state"] for item in requests_now}
    check(
        set(states) == {*seeded, *stale},
        f"the emulator holds {sorted(states)}, seeded {sorted([*seeded, *stale])}",
    )
    for sr_id in stale:
        check(states[sr_id] == "awaiting_signature", f"stale {sr_id} is {states[sr_id]!r} before arming")
    for sr_id in approved:
        check(states[sr_id] == "canceled", f"{sr_id} is {states[sr_id]!r} in the emulator, not 'canceled'")
    for other in seeded:
        if other not in approved:
            check(
                states[other] == "awaiting_signature",
                f"{other} was not to be touched but is {states[other]!r}",
            )

    cancels = [
        entry for entry in log if entry["method"] == "POST" and "/signature_request/cancel/" in entry["path"]
    ]
    check(
        sorted((entry["path"], entry["status"]) for entry in cancels)
        == sorted((f"/v3/signature_request/cancel/{sr_id}", 200) for sr_id in approved),
        f"expected exactly one accepted cancel of each of {approved}; cancel calls: {cancels}",
    )
    rejected_calls = [(entry["method"], entry["status"]) for entry in log if rejected in entry["path"]]
    check(
        rejected_calls == [("GET", 200)],
        f"the rejected {rejected} was to be read once by the preview, never cancelled: {rejected_calls}",
    )
    never_named = [sr_id for sr_id in seeded if sr_id not in approved and sr_id != rejected]
    touched_others = [entry for entry in log if any(o in entry["path"] for o in never_named)]
    check(not touched_others, f"calls about requests no run named: {touched_others}")
    refused = [entry for entry in log if entry["status"] in (401, 403, 429) or entry["status"] >= 500]
    check(not refused, f"the emulator refused or failed calls: {refused}")
    for sr_id in approved:
        confirmations = [entry for entry in log if entry["path"] == f"/v3/signature_request/{sr_id}"]
        check(
            any(entry["status"] == 410 for entry in confirmations),
            f"the cancellation of {sr_id} was never confirmed by a 410 on GET: {confirmations}",
        )


def wait_for_run(stack: Stack, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run once it has ended, with its task instances' states on failure."""
    run_path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def ended() -> dict[str, Any] | None:
        run: dict[str, Any] = stack.api("GET", run_path)
        return run if run["state"] in TERMINAL_RUN_STATES else None

    run = stack.wait_for(f"{dag_id} run {run_id} to end", ended, RUN_TIMEOUT_S, 1.0)
    if run["state"] != "success":
        tis = stack.api("GET", f"{run_path}/taskInstances")["task_instances"]
        states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
        raise AssertionError(f"{dag_id} run {run_id} ended {run['state']}; task states: {states}")
    return run


def connect_callbacks(stack: Stack, api_key: str) -> dict[str, Any]:
    """
    Point the account's callback URL at the API server's receiver, as a user does (``PUT
    /v3/account`` with ``callback_url``); check that ``callback_test`` is acknowledged and that a
    forged event is refused.
    """
    callback_url = f"{stack.airflow_url}{CALLBACK_PATH}"
    answer = requests.put(
        f"{stack.emulator_base_url}/account",
        json={"callback_url": callback_url},
        auth=(api_key, ""),
        timeout=30,
    )
    check(answer.status_code == 200, f"PUT /v3/account answered {answer.status_code}: {answer.text[:300]}")
    check(
        answer.json()["account"]["callback_url"] == callback_url,
        f"the account's callback URL is {answer.json()['account'].get('callback_url')!r}",
    )
    stack.admin("POST", "callback_test")

    def acknowledged() -> dict[str, Any] | None:
        attempts = stack.admin("GET", "callback_attempts")
        return next((a for a in attempts if a["event_type"] == "callback_test" and a["acknowledged"]), None)

    test = stack.wait_for("callback_test to be acknowledged by the receiver", acknowledged, 60, 0.5)
    # A forged event (hash keyed with another key) is refused, and records nothing.
    event_time = str(int(time.time()))
    forged = {
        "event": {
            "event_time": event_time,
            "event_type": "signature_request_canceled",
            "event_hash": event_hash("not-the-api-key", event_time, "signature_request_canceled"),
        },
        "signature_request": {"signature_request_id": "ab" * 20},
    }
    refused = requests.post(callback_url, files={"json": (None, json.dumps(forged))}, timeout=30)
    check(refused.status_code == 403, f"a forged event was answered {refused.status_code}: {refused.text}")
    check(refused.text != CALLBACK_ACKNOWLEDGEMENT, "a forged event was acknowledged")
    return {"callback_url": callback_url, "callback_test": test, "forged_event_status": refused.status_code}


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def check_events(stack: Stack, ui: UI, run_id: str, chosen: str, out: Path) -> dict[str, Any]:
    """
    The cancellation was confirmed by its event: one GET of the id, after the cancel, before the
    sensor ended (its fallback poll is minutes away); the event became an asset event; the audit
    DAG scheduled on that asset ran and confirmed the id with its own read; the asset event in the UI.
    """
    attempts = stack.admin("GET", "callback_attempts")
    delivered = [
        a
        for a in attempts
        if a["event_type"] == "signature_request_canceled" and a["signature_request_id"] == chosen
    ]
    check(
        any(a["acknowledged"] for a in delivered),
        f"the canceled event of {chosen} was not acknowledged: {delivered}",
    )

    assets = stack.api("GET", "assets", params={"uri_pattern": "dropbox-sign://"})["assets"]
    asset = next((a for a in assets if a["uri"] == CANCELED_ASSET_URI), None)
    check(asset is not None, f"no asset {CANCELED_ASSET_URI} among {[a['uri'] for a in assets]}")
    assert asset is not None

    def asset_event() -> dict[str, Any] | None:
        events = stack.api("GET", "assets/events", params={"asset_id": asset["id"]})["asset_events"]
        return next((e for e in events if (e.get("extra") or {}).get("signature_request_id") == chosen), None)

    event = stack.wait_for(f"the asset event of {chosen}", asset_event, 60, 1.0)
    dump_json(out / "asset-event.json", event)
    check(stack.api_key not in json.dumps(event), "the asset event holds the API key")

    def audited() -> dict[str, Any] | None:
        runs = stack.api("GET", f"dags/{AUDIT_DAG_ID}/dagRuns")["dag_runs"]
        for run in runs:
            if run["state"] == "failed":
                raise AssertionError(f"{AUDIT_DAG_ID} run {run['dag_run_id']} failed")
            if run["state"] == "success":
                trail = xcom_value(stack, AUDIT_DAG_ID, run["dag_run_id"], "audit")
                row = next((r for r in trail if r["signature_request_id"] == chosen), None)
                if row is not None:
                    return {"run_id": run["dag_run_id"], "run_type": run["run_type"], "row": row}
        return None

    audit = stack.wait_for(f"{AUDIT_DAG_ID} to audit {chosen}", audited, RUN_TIMEOUT_S, 2.0)
    check(
        audit["run_type"] == "asset_triggered", f"the audit run was {audit['run_type']}, not asset-triggered"
    )
    check(audit["row"]["confirmed"] is True, f"the audit trail did not confirm {chosen}: {audit['row']}")

    # The audit task reads the id too, on its own event and often in the same seconds as the
    # triggerer: its reads are told apart by the client (a worker's, not the triggerer's) and by
    # its run's times.
    audit_ti = stack.api(
        "GET",
        f"dags/{AUDIT_DAG_ID}/dagRuns/{urllib.parse.quote(audit['run_id'], safe='')}/taskInstances/audit",
    )
    audit_window = (_epoch(audit_ti["start_date"]), _epoch(audit_ti["end_date"]))
    run_path = f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    sensor = stack.api("GET", f"{run_path}/taskInstances/{SENSOR_TASK_ID}")
    sensor_end = _epoch(sensor["end_date"])
    log = stack.admin("GET", "requests_log")
    # The preview read the id once before the cancel: the sensor's reads come after it.
    cancelled_at = min(
        entry["time"]
        for entry in log
        if entry["method"] == "POST" and entry["path"] == f"/v3/signature_request/cancel/{chosen}"
    )
    id_reads = [
        entry
        for entry in log
        if entry["method"] == "GET"
        and entry["path"] == f"/v3/signature_request/{chosen}"
        and cancelled_at <= entry["time"] <= sensor_end
    ]
    reads = [
        entry
        for entry in id_reads
        if TRIGGERER_CLIENT in entry["user_agent"] or not audit_window[0] <= entry["time"] <= audit_window[1]
    ]
    check(
        [(entry["status"], TRIGGERER_CLIENT in entry["user_agent"]) for entry in reads] == [(410, True)],
        f"the sensor was to confirm {chosen} with one read on the triggerer after its event; its reads: "
        f"{reads}; every read of the id until the sensor ended: {id_reads}; the audit task ran "
        f"{audit_window}",
    )

    ui.page.goto(f"{stack.airflow_url}/assets/{asset['id']}")
    ui.page.get_by_text(CANCELED_ASSET_URI).first.wait_for()
    ui.shot("asset-event")
    return {"sensor_reads": reads, "asset_event_id": event["id"], "audit": audit}


def cancel_calls(stack: Stack, ids: list[str]) -> list[tuple[str, int]]:
    """The cancel calls the emulator received for ``ids``: (path, status)."""
    return [
        (entry["path"], entry["status"])
        for entry in stack.admin("GET", "requests_log")
        if entry["method"] == "POST" and entry["path"].rsplit("/", 1)[-1] in ids
    ]


def check_unarmed_first_run(stack: Stack, stale: list[str], out: Path) -> dict[str, Any]:
    """
    The clean-up's first scheduled run, made by unpausing it while unarmed: a dry run that sent no
    cancel, reported what it would cancel and said NOT ARMED in its log.
    """

    def first_run() -> dict[str, Any] | None:
        runs = stack.api("GET", f"dags/{CLEANUP_DAG_ID}/dagRuns")["dag_runs"]
        return runs[0] if runs else None

    run = stack.wait_for(f"the scheduler to make a run of {CLEANUP_DAG_ID}", first_run, 60, 1.0)
    check(
        run["run_type"] == "scheduled", f"the first {CLEANUP_DAG_ID} run is {run['run_type']}, not scheduled"
    )
    run = wait_for_run(stack, CLEANUP_DAG_ID, run["dag_run_id"])
    report = xcom_value(stack, CLEANUP_DAG_ID, run["dag_run_id"], "report")
    dump_json(out / "cleanup-unarmed-report.json", report)
    check(
        (report["armed"], report["dry_run"]) == (False, True),
        f"the unarmed run reported armed={report['armed']}, dry_run={report['dry_run']}",
    )
    check(
        report["outcomes"] == dict.fromkeys(stale, "would_cancel"),
        f"the unarmed run reported {report['outcomes']}, expected would_cancel for {stale}",
    )
    check(not cancel_calls(stack, stale), f"the unarmed run sent cancels: {cancel_calls(stack, stale)}")
    states = {i["signature_request_id"]: i["state"] for i in stack.admin("GET", "signature_requests")}
    check(
        all(states[sr_id] == "awaiting_signature" for sr_id in stale),
        f"after the unarmed run: {states}",
    )
    run_path = f"dags/{CLEANUP_DAG_ID}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
    ti = stack.api("GET", f"{run_path}/taskInstances/report")
    events = task_log(stack, run["dag_run_id"], "report", ti["try_number"], CLEANUP_DAG_ID)
    check(
        any("NOT ARMED" in str(event.get("event", "")) for event in events),
        "the unarmed run's report log does not say NOT ARMED",
    )
    return {"run_id": run["dag_run_id"], "run_type": run["run_type"], "report": report}


def check_armed_run(stack: Stack, stale: list[str], untouched: list[str], out: Path) -> dict[str, Any]:
    """Armed through the Variable, a triggered run cancels each stale request once, and nothing else."""
    stack.api("POST", "variables", json={"key": ARMED_VARIABLE, "value": "true"})
    run = stack.api("POST", f"dags/{CLEANUP_DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    run = wait_for_run(stack, CLEANUP_DAG_ID, run["dag_run_id"])
    report = xcom_value(stack, CLEANUP_DAG_ID, run["dag_run_id"], "report")
    dump_json(out / "cleanup-armed-report.json", report)
    check(
        (report["armed"], report["dry_run"]) == (True, False),
        f"the armed run reported armed={report['armed']}, dry_run={report['dry_run']}",
    )
    check(
        report["outcomes"] == dict.fromkeys(stale, "canceled"),
        f"the armed run reported {report['outcomes']}, expected canceled for {stale}",
    )
    check(
        sorted(cancel_calls(stack, stale))
        == sorted((f"/v3/signature_request/cancel/{i}", 200) for i in stale),
        f"expected one accepted cancel of each stale request: {cancel_calls(stack, stale)}",
    )
    states = {i["signature_request_id"]: i["state"] for i in stack.admin("GET", "signature_requests")}
    check(all(states[i] == "canceled" for i in stale), f"after the armed run: {states}")
    check(all(states[i] == "awaiting_signature" for i in untouched), f"after the armed run: {states}")
    return {"run_id": run["dag_run_id"], "report": report}


def check_no_key_in_logs(log_dir: Path, api_key: str) -> int:
    """The API key must reach no log line (component or task logs); returns the number of files read."""
    needle = api_key.encode()
    files = [path for path in log_dir.rglob("*") if path.is_file()]
    leaked = [str(path) for path in files if needle in path.read_bytes()]
    check(not leaked, f"the API key appears in {leaked}")
    return len(files)


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


def run_steps(stack: Stack, out: Path, api_key: str, timer: Timer, summary: dict[str, Any]) -> None:
    """Everything the run checks, in order; raises on the first failure."""
    check(
        Path(CHROMIUM).is_file(),
        f"{CHROMIUM} is missing: install Debian's Chromium first (apt-get install -y chromium)",
    )
    with timer.phase("start the emulator and seed signature requests"):
        # Airflow 3.3.2 can fail a deferred task whose trigger fires within seconds of its deferral
        # (the executor's late report of the deferring try reads as a state changed externally:
        # apache/airflow#67287); confirmations that take longer than that report keep the run clean.
        stack.start_emulator(cancel_delay=10.0)
        seeded = seed(stack)
        stale = seed_stale(stack)
        # The second (unsigned) and the fourth (one of two signers signed) are approved; the third
        # is rejected; the first is never named.
        approved, rejected = [seeded[1], seeded[3]], seeded[2]
        summary.update(
            emulator=stack.emulator_base_url,
            seeded=seeded,
            stale=stale,
            cancelled=approved,
            rejected=rejected,
        )
    with timer.phase("start Airflow and wait until healthy"):
        check(any(stack.dags_folder.glob("*.py")), f"no DAG files in {stack.dags_folder}")
        stack.start_airflow()
        summary["airflow"] = stack.airflow_url
        dag = wait_for_dag(stack)
        wait_for_dag(stack, CLEANUP_DAG_ID)
        wait_for_dag(stack, AUDIT_DAG_ID)
    with sync_playwright() as playwright:
        ui = UI(playwright, stack.airflow_url, out)
        failed = True
        try:
            run_id = ui_steps(stack, ui, out, dag, api_key, approved, rejected, timer, summary)
            failed = False
        finally:
            if failed:
                with contextlib.suppress(Exception):
                    summary["failure_page"] = [str(p) for p in ui.dump("failure-page")]
            with contextlib.suppress(Exception):
                ui.close(keep_trace=failed)
    with timer.phase("the run's results; exactly the approved requests cancelled"):
        summary["results"] = check_outcomes(stack, run_id, approved)
        check_emulator(stack, seeded, stale, approved, rejected, out)
    with timer.phase("clean-up: its first scheduled run, unarmed, cancels nothing"):
        summary["cleanup_unarmed"] = check_unarmed_first_run(stack, stale, out)
    with timer.phase("clean-up: armed, a triggered run cancels the stale requests only"):
        untouched = [sr_id for sr_id in seeded if sr_id not in approved]
        summary["cleanup_armed"] = check_armed_run(stack, stale, untouched, out)
    with timer.phase("the key in no log"):
        summary["log_files_checked_for_key"] = check_no_key_in_logs(stack.log_dir, api_key)


def ui_steps(
    stack: Stack,
    ui: UI,
    out: Path,
    dag: dict[str, Any],
    api_key: str,
    approved: list[str],
    rejected: str,
    timer: Timer,
    summary: dict[str, Any],
) -> str:
    """
    The browser part: the connection, the trigger form, the approved run, the rejected run;
    returns the approved run's id.
    """
    with timer.phase("UI: add the Dropbox Sign connection"):
        form = ConnectionForm.from_provider_info(get_provider_info(), CONN_TYPE)
        declared = {*form.relabeling.values(), *(spec["label"] for spec in form.conn_fields.values())}
        for label in ("API key", "Access token", "Requests per minute"):
            check(label in declared, f"the provider no longer declares the {label!r} field")
        ui.add_connection(form, CONN_ID, stack.emulator_base_url, api_key)
        check_connection(stack, stack.emulator_base_url)
        # Unpaused now that it has a connection: its first scheduled run goes on beside the UI steps.
        stack.api("PATCH", f"dags/{CLEANUP_DAG_ID}", json={"is_paused": False})
    with timer.phase("events: the account's callback URL set to the API server's receiver"):
        summary["callbacks"] = connect_callbacks(stack, api_key)
        stack.api("PATCH", f"dags/{AUDIT_DAG_ID}", json={"is_paused": False})
    with timer.phase("UI: trigger the DAG (invalid id refused, then two seeded ids)"):
        ui.open_dag(DAG_ID, dag.get("dag_display_name") or DAG_ID)
        # The form's list field takes one id per line.
        run = ui.trigger(DAG_ID, IDS_PARAM, INVALID_ID, "\n".join(approved))
        run_id: str = run["dag_run_id"]
        summary["run_id"] = run_id
        check(
            run["conf"].get(IDS_PARAM) == approved,
            f"the run's conf holds {run['conf'].get(IDS_PARAM)!r}, expected {approved!r}",
        )
        runs = [r["dag_run_id"] for r in stack.api("GET", f"dags/{DAG_ID}/dagRuns")["dag_runs"]]
        check(runs == [run_id], f"only the valid trigger was to create a run; runs: {runs}")
    with timer.phase("approve in the form; prove the sensor was deferred to the triggerer"):
        state, timeline = watch_run(
            stack,
            ui,
            run_id,
            out,
            summary,
            lambda: answer_in_form(ui, run_id, APPROVAL_FORM_SHOWS, "Approve", "approval-form"),
        )
        ui.open_run(DAG_ID, run_id)
        if state != "success":
            raise AssertionError(f"run {run_id} ended {state}; task states: {timeline[-1]}")
        ui.expect_run_state("success")
        ui.shot("run-success")
        summary["deferral"] = prove_deferred(stack, run_id, timeline, out)
    with timer.phase("events: one read after the event; the asset event; the audit DAG ran"):
        summary["events"] = check_events(stack, ui, run_id, approved[0], out)
    with timer.phase("UI: a second run, rejected in its approval form, cancels nothing"):
        ui.open_dag(DAG_ID, dag.get("dag_display_name") or DAG_ID)
        summary["rejected_run"] = reject_run(stack, ui, rejected, out)
    return run_id


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="dropbox-sign-e2e-"))
    # Per run, so that the leak check means something.
    api_key = f"e2e-{secrets.token_hex(16)}"

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, _on_signal)
    signal.alarm(OVERALL_TIMEOUT_S)

    timer = Timer()
    stack = Stack(
        log_dir=log_dir,
        home=home,
        dags_folder=args.dags_folder.resolve(),
        api_key=api_key,
        # The DAGs confirm on Dropbox Sign's events; their fallback poll is further away than any
        # confirmation here, so each confirmation is the read an event woke.
        airflow_extra_env={"DROPBOX_SIGN_EVENT_FIRST": "true", "DROPBOX_SIGN_CONFIRM_POKE_INTERVAL": "240"},
    )
    summary: dict[str, Any] = {"dags_folder": str(stack.dags_folder)}
    ok = False
    try:
        run_steps(stack, out, api_key, timer, summary)
        ok = True
    except (Exception, KeyboardInterrupt) as exc:
        print(f"\nE2E FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        summary["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        # Cleanup must finish even if the user presses Ctrl-C again or the watchdog fires now.
        signal.alarm(0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        print("== stopping every started process", flush=True)
        stack.stop()
        if ok:
            shutil.rmtree(home, ignore_errors=True)
        summary.update(ok=ok, seconds=timer.total, phases=timer.phases)
        dump_json(out / "summary.json", summary)

    if ok:
        print(f"\nE2E PASSED in {timer.total} s; screenshots and logs in {out}")
        return 0
    print(f"\nArtefacts: {out}", file=sys.stderr)
    print(f"  screenshots: {', '.join(p.name for p in sorted(out.glob('*.png'))) or 'none'}", file=sys.stderr)
    print(f"  component logs: {log_dir}/*.log; task logs: {log_dir / 'tasks'}", file=sys.stderr)
    if (out / "trace.zip").exists():
        print(f"  browser trace: {out / 'trace.zip'} (.venv/bin/playwright show-trace)", file=sys.stderr)
    print(f"  Airflow home kept for inspection: {home}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
