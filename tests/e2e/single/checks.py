"""
What the UI run checks through the REST API, in the task logs and in the emulator: the saved
connection, the deferral to the triggerer, the events, exactly the approved requests cancelled,
the clean-up unarmed and armed, and the key in no log.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from pathlib import Path
from typing import Any

import requests

from dropbox_sign_provider.events.callback import CALLBACK_ACKNOWLEDGEMENT, event_hash

from ..harness.airflow import Airflow
from ..harness.emulator import Emulator
from ..harness.steps import check, dump_json
from .ui import UI

DAG_ID = "dropbox_sign_cancel_request"
CLEANUP_DAG_ID = "dropbox_sign_expiry_cleanup"
AUDIT_DAG_ID = "dropbox_sign_cancellation_audit"
CANCELED_ASSET_URI = "dropbox-sign://dropbox_sign_default/signature_request_canceled"
# The async hook's HTTP client names itself so in ``User-Agent``; the sync hook's says python-requests.
TRIGGERER_CLIENT = "aiohttp"
CALLBACK_PATH = "/dropbox-sign/callback"
#: The manual DAG's task that cancels, then waits (deferred, on the triggerer) for the confirmations.
CANCEL_TASK_ID = "cancel"
TRIGGER_CLASSPATH = "dropbox_sign_provider.triggers.signature_request.SignatureRequestCanceledTrigger"
CONN_ID = "dropbox_sign_default"
CONN_TYPE = "dropbox_sign"
#: Can disarm (``false``), never arm: arming is the deployment's ``[dropbox_sign] armed``.
ARMED_VARIABLE = "dropbox_sign_cleanup_armed"
#: The deployment's configuration that arms the clean-up, for every component.
ARMED_ENV = {"AIRFLOW__DROPBOX_SIGN__ARMED": "True"}
NOT_ARMED = "NOT ARMED: [dropbox_sign] armed is False"
RUN_TIMEOUT_S = 300


def wait_for_success(airflow: Airflow, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run once it has ended, with its task instances' states on failure."""
    run = airflow.wait_for_end(dag_id, run_id, RUN_TIMEOUT_S)
    if run["state"] != "success":
        tis = airflow.task_instances(dag_id, run_id)
        states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
        raise AssertionError(f"{dag_id} run {run_id} ended {run['state']}; task states: {states}")
    return run


def check_connection(airflow: Airflow, host: str) -> dict[str, Any]:
    """What the form saved, as the REST API reports it (the key itself is masked there)."""
    conn: dict[str, Any] = airflow.api("GET", f"connections/{CONN_ID}")
    check(conn["conn_type"] == CONN_TYPE, f"saved conn_type {conn['conn_type']!r}, expected {CONN_TYPE!r}")
    check(conn["host"] == host, f"saved host {conn['host']!r}, expected {host!r}")
    check(bool(conn["password"]), "the saved connection has no API key")
    for hidden in ("login", "schema", "port"):
        check(conn[hidden] in (None, ""), f"the saved connection has a {hidden}: {conn[hidden]!r}")
    return conn


def connect_callbacks(airflow: Airflow, emulator: Emulator) -> dict[str, Any]:
    """
    Point the account's callback URL at the API server's receiver, as a user does (``PUT
    /v3/account`` with ``callback_url``); check that ``callback_test`` is acknowledged and that a
    forged event is refused.
    """
    callback_url = f"{airflow.url}{CALLBACK_PATH}"
    answer = requests.put(
        f"{emulator.base_url}/account",
        json={"callback_url": callback_url},
        auth=(emulator.api_key, ""),
        timeout=30,
    )
    check(answer.status_code == 200, f"PUT /v3/account answered {answer.status_code}: {answer.text[:300]}")
    check(
        answer.json()["account"]["callback_url"] == callback_url,
        f"the account's callback URL is {answer.json()['account'].get('callback_url')!r}",
    )
    # Setting the URL sends a callback_test, as Dropbox Sign does.

    def acknowledged() -> dict[str, Any] | None:
        attempts = emulator.admin("GET", "callback_attempts")
        return next((a for a in attempts if a["event_type"] == "callback_test" and a["acknowledged"]), None)

    test = airflow.wait_for("callback_test to be acknowledged by the receiver", acknowledged, 60, 0.5)
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


def prove_deferred(
    airflow: Airflow, run_id: str, timeline: list[dict[str, Any]], out: Path
) -> dict[str, Any]:
    """
    Prove the cancel task went through ``deferred`` to wait for its confirmations, and that this
    deployment's triggerer ran its trigger.

    Two independent signals, both required:

    * live: while the run was in progress the REST API reported the cancel task's instance as
      ``deferred``, holding a trigger of the provider's trigger class;
    * after the fact: the cancel try's log, as the REST API serves it, holds the task runner's
      "Pausing task as DEFERRED", and the triggerer's own "trigger ... starting" and "Trigger fired
      event" lines, read from a ``.trigger.<job id>.log`` file whose job id is a ``TriggererJob``
      of this deployment (and the same job the live signal showed, when it showed one).
    """
    cancel_states = [entry["task_instances"].get(CANCEL_TASK_ID, {}) for entry in timeline]
    deferred = [s for s in cancel_states if s.get("state") == "deferred"]
    check(
        bool(deferred),
        f"the REST API never showed {CANCEL_TASK_ID} deferred; its states were "
        f"{[s.get('state') for s in cancel_states]}",
    )
    classpaths = {s["trigger_classpath"] for s in deferred if s["trigger_classpath"]}
    check(
        classpaths == {TRIGGER_CLASSPATH},
        f"while deferred, {CANCEL_TASK_ID} held triggers {sorted(classpaths)}, expected {TRIGGER_CLASSPATH}",
    )
    live_jobs = {s["triggerer_job_id"] for s in deferred if s["triggerer_job_id"] is not None}

    ti = airflow.api("GET", airflow.run_path(DAG_ID, run_id, CANCEL_TASK_ID))
    events = airflow.task_log(DAG_ID, run_id, CANCEL_TASK_ID, ti["try_number"])
    dump_json(out / f"task-log-{CANCEL_TASK_ID}.json", events)
    messages = [str(event.get("event", "")) for event in events]
    trigger_files = {
        int(match.group(1)) for text in messages if (match := re.search(r"\.log\.trigger\.(\d+)\.log$", text))
    }
    from_triggerer = [
        str(event.get("event", "")) for event in events if event.get("filename") == "triggerer_job_runner.py"
    ]
    check(
        any(text.startswith("Pausing task as DEFERRED") for text in messages),
        f"the {CANCEL_TASK_ID} log never says the task was paused as DEFERRED",
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
        job["id"]: job for job in airflow.api("GET", "jobs", params={"job_type": "TriggererJob"})["jobs"]
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


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def check_events(
    airflow: Airflow, emulator: Emulator, ui: UI, run_id: str, chosen: str, out: Path
) -> dict[str, Any]:
    """
    The cancellation was confirmed by its event: one GET of the id, after the cancel, before the
    cancel task ended (its fallback poll is minutes away); the event became an asset event; the audit
    DAG scheduled on that asset ran and confirmed the id with its own read; the asset event in the UI.
    """
    attempts = emulator.admin("GET", "callback_attempts")
    delivered = [
        a
        for a in attempts
        if a["event_type"] == "signature_request_canceled" and a["signature_request_id"] == chosen
    ]
    check(
        any(a["acknowledged"] for a in delivered),
        f"the canceled event of {chosen} was not acknowledged: {delivered}",
    )

    assets = airflow.api("GET", "assets", params={"uri_pattern": "dropbox-sign://"})["assets"]
    asset = next((a for a in assets if a["uri"] == CANCELED_ASSET_URI), None)
    check(asset is not None, f"no asset {CANCELED_ASSET_URI} among {[a['uri'] for a in assets]}")
    assert asset is not None

    def asset_event() -> dict[str, Any] | None:
        events = airflow.api("GET", "assets/events", params={"asset_id": asset["id"]})["asset_events"]
        return next((e for e in events if (e.get("extra") or {}).get("signature_request_id") == chosen), None)

    event = airflow.wait_for(f"the asset event of {chosen}", asset_event, 60, 1.0)
    dump_json(out / "asset-event.json", event)
    check(emulator.api_key not in json.dumps(event), "the asset event holds the API key")

    def audited() -> dict[str, Any] | None:
        for run in airflow.runs(AUDIT_DAG_ID):
            if run["state"] == "failed":
                raise AssertionError(f"{AUDIT_DAG_ID} run {run['dag_run_id']} failed")
            if run["state"] == "success":
                trail = airflow.xcom(AUDIT_DAG_ID, run["dag_run_id"], "audit")
                row = next((r for r in trail if r["signature_request_id"] == chosen), None)
                if row is not None:
                    return {"run_id": run["dag_run_id"], "run_type": run["run_type"], "row": row}
        return None

    audit = airflow.wait_for(f"{AUDIT_DAG_ID} to audit {chosen}", audited, RUN_TIMEOUT_S, 2.0)
    check(
        audit["run_type"] == "asset_triggered", f"the audit run was {audit['run_type']}, not asset-triggered"
    )
    check(audit["row"]["confirmed"] is True, f"the audit trail did not confirm {chosen}: {audit['row']}")

    # The audit task reads the id too, on its own event and often in the same seconds as the
    # triggerer: its reads are told apart by the client (a worker's, not the triggerer's) and by
    # its run's times.
    audit_ti = airflow.api("GET", airflow.run_path(AUDIT_DAG_ID, audit["run_id"], "audit"))
    audit_window = (_epoch(audit_ti["start_date"]), _epoch(audit_ti["end_date"]))
    cancel = airflow.api("GET", airflow.run_path(DAG_ID, run_id, CANCEL_TASK_ID))
    cancel_end = _epoch(cancel["end_date"])
    log = emulator.requests_log()
    # The preview read the id once before the cancel: the confirmation's reads come after it.
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
        and cancelled_at <= entry["time"] <= cancel_end
    ]
    reads = [
        entry
        for entry in id_reads
        if TRIGGERER_CLIENT in entry["user_agent"] or not audit_window[0] <= entry["time"] <= audit_window[1]
    ]
    check(
        [(entry["status"], TRIGGERER_CLIENT in entry["user_agent"]) for entry in reads] == [(410, True)],
        f"the cancel task was to confirm {chosen} with one read on the triggerer after its event; its "
        f"reads: {reads}; every read of the id until the cancel task ended: {id_reads}; the audit task ran "
        f"{audit_window}",
    )

    ui.page.goto(f"{airflow.url}/assets/{asset['id']}")
    ui.page.get_by_text(CANCELED_ASSET_URI).first.wait_for()
    ui.shot("asset-event")
    return {"confirmation_reads": reads, "asset_event_id": event["id"], "audit": audit}


def check_outcomes(airflow: Airflow, run_id: str, approved: list[str]) -> dict[str, Any]:
    """The cancel task's result (XCom): the approved ids, reported ``canceled`` once confirmed."""
    expected = dict.fromkeys(approved, "canceled")
    value = airflow.xcom(DAG_ID, run_id, CANCEL_TASK_ID)
    check(value == expected, f"{CANCEL_TASK_ID} returned {value!r}, expected {expected!r}")
    return {CANCEL_TASK_ID: value}


def check_emulator(
    emulator: Emulator, seeded: list[str], stale: list[str], approved: list[str], rejected: str, out: Path
) -> None:
    """
    Exactly the approved requests were cancelled, each by one accepted cancel call; the rejected
    one was read by its run's preview and nothing more; nothing else was touched. The stale
    requests may have been looked at by the unarmed clean-up, never cancelled.
    """
    requests_now = emulator.admin("GET", "signature_requests")
    log = emulator.requests_log()
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


# -- the clean-up ----------------------------------------------------------------------------------


def cancel_calls(emulator: Emulator, ids: list[str]) -> list[tuple[str, int]]:
    """The cancel calls the emulator received for ``ids``: (path, status)."""
    return [
        (entry["path"], entry["status"])
        for entry in emulator.requests_log()
        if entry["method"] == "POST" and entry["path"].rsplit("/", 1)[-1] in ids
    ]


def cleanup_report(
    airflow: Airflow, run_id: str, stale: list[str], armed: bool, out: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    The clean-up run once it succeeded, and its report (the ``report`` task's result): armed, it
    cancelled the stale requests, which ``find`` alone selected; unarmed, a dry run, it says it
    would, and why. Kept as ``cleanup-armed-report.json`` (or ``-unarmed``).
    """
    which, outcome = ("armed", "canceled") if armed else ("unarmed", "would_cancel")
    run = wait_for_success(airflow, CLEANUP_DAG_ID, run_id)
    report = airflow.xcom(CLEANUP_DAG_ID, run_id, "report")
    dump_json(out / f"cleanup-{which}-report.json", report)
    why = report["why"]
    check(
        report["dry_run"] is (not armed),
        f"the {which} run reported dry_run={report['dry_run']} (why: {why!r})",
    )
    check(
        why is None if armed else str(why).startswith(NOT_ARMED),
        f"the {which} run said why it was a dry run: {why!r}",
    )
    check(
        report["outcomes"] == dict.fromkeys(stale, outcome),
        f"the {which} run reported {report['outcomes']}, expected {outcome} for {stale}",
    )
    listed = report["listed"]
    check(
        listed.get("selected") == len(stale),
        f"the {which} run's find selected {listed.get('selected')}, expected {len(stale)}: {listed}",
    )
    check(
        report["decision"]["asked"] is False,
        f"the {which} run, under its cap, asked a person: {report['decision']}",
    )
    return run, report


def check_unarmed_first_run(
    airflow: Airflow, emulator: Emulator, stale: list[str], out: Path
) -> dict[str, Any]:
    """
    The clean-up's first scheduled run, made by unpausing it while the deployment has not armed it
    (and the Variable says ``true``, which arms nothing): a dry run that sent no cancel, reported
    what it would cancel and said NOT ARMED in its log.
    """

    def first_run() -> dict[str, Any] | None:
        runs = airflow.runs(CLEANUP_DAG_ID)
        return runs[0] if runs else None

    run = airflow.wait_for(f"the scheduler to make a run of {CLEANUP_DAG_ID}", first_run, 60, 1.0)
    check(
        run["run_type"] == "scheduled", f"the first {CLEANUP_DAG_ID} run is {run['run_type']}, not scheduled"
    )
    run, report = cleanup_report(airflow, run["dag_run_id"], stale, False, out)
    check(not cancel_calls(emulator, stale), f"the unarmed run sent cancels: {cancel_calls(emulator, stale)}")
    states = emulator.states()
    check(
        all(states[sr_id] == "awaiting_signature" for sr_id in stale),
        f"after the unarmed run: {states}",
    )
    ti = airflow.api("GET", airflow.run_path(CLEANUP_DAG_ID, run["dag_run_id"], "report"))
    events = airflow.task_log(CLEANUP_DAG_ID, run["dag_run_id"], "report", ti["try_number"])
    check(
        any(NOT_ARMED in str(event.get("event", "")) for event in events),
        f"the unarmed run's report log does not say {NOT_ARMED!r}",
    )
    return {"run_id": run["dag_run_id"], "run_type": run["run_type"], "report": report}


def check_armed_run(
    airflow: Airflow, emulator: Emulator, stale: list[str], untouched: list[str], out: Path
) -> dict[str, Any]:
    """
    Armed by the deployment (``[dropbox_sign] armed = True``, every component restarted with it),
    a triggered run cancels each stale request once, and nothing else.
    """
    airflow.restart(ARMED_ENV)
    run, report = cleanup_report(airflow, airflow.trigger(CLEANUP_DAG_ID, {}), stale, True, out)
    check(
        sorted(cancel_calls(emulator, stale))
        == sorted((f"/v3/signature_request/cancel/{i}", 200) for i in stale),
        f"expected one accepted cancel of each stale request: {cancel_calls(emulator, stale)}",
    )
    states = emulator.states()
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
