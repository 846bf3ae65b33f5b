"""
The distributed run's judgement, by the emulator's final state and request log and the meter's
per-process log: what was cancelled and how often, the task instances, and per 60-second window
the requests the account received against its limit and every 429, per process.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from ..harness.emulator import Emulator
from ..harness.steps import Failures

CLEANUP = "dropbox_sign_expiry_cleanup"
WINDOW = 60


def judge(
    emulator: Emulator,
    ids: dict[str, list[str]],
    failures: Failures,
    tis: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    state = {item["signature_request_id"]: item for item in emulator.admin("GET", "signature_requests")}
    emulator_log = emulator.requests_log()
    cancel_calls = [e for e in emulator_log if e["method"] == "POST" and "/cancel/" in e["path"]]
    # A cancel refused with 429 never reached the account's requests: it cancelled nothing.
    cancels: collections.Counter[str] = collections.Counter(
        e["path"].rsplit("/", 1)[1] for e in cancel_calls if e["status"] != 429
    )
    states = {kind: collections.Counter(_state(state[i]) for i in group) for kind, group in ids.items()}
    for kind in ("stale", "manual"):
        failures.check(
            states[kind] == {"canceled": len(ids[kind])},
            f"{kind} requests not all canceled: {states[kind]}",
        )
    for kind in ("fresh", "signed", "declined"):
        touched = [i for i in ids[kind] if cancels[i]]
        failures.check(not touched, f"{len(touched)} {kind} requests were sent a cancel: {touched[:5]}")
    expected = {"fresh": "awaiting_signature", "signed": "completed", "declined": "declined"}
    for kind, want in expected.items():
        failures.check(
            states[kind] == {want: len(ids[kind])}, f"{kind} requests changed state: {states[kind]}"
        )
    # One cancel per id per try of the task instance that handled it: no re-cancel is due within a
    # run this short (the 60-minute rule), so a second cancel can only come from a retried batch.
    tries_allowed = max(
        (ti["try_number"] for ti in tis.get(CLEANUP, []) if ti["task_id"] == "cancel"), default=1
    )
    over = {i: n for i, n in cancels.items() if n > tries_allowed}
    failures.check(not over, f"ids cancelled more often than the tries allow ({tries_allowed}): {over}")
    # The manual run asks for approval and is approved; the clean-up, under its cap, asks nobody: its
    # approval succeeds without a grant. Nothing is skipped.
    for dag_id, instances in tis.items():
        bad = [
            (ti["task_id"], ti.get("map_index"), ti["state"]) for ti in instances if ti["state"] != "success"
        ]
        failures.check(not bad, f"{dag_id}: task instances not successful: {bad}")
    retried = [
        {
            "dag_id": dag_id,
            "task_id": ti["task_id"],
            "map_index": ti.get("map_index"),
            "try_number": ti["try_number"],
            "state": ti["state"],
        }
        for dag_id, instances in tis.items()
        for ti in instances
        if ti["try_number"] > 1
    ]
    return {
        "states": {kind: dict(counter) for kind, counter in states.items()},
        "cancels_per_id_histogram": dict(sorted(collections.Counter(cancels.values()).items())),
        "cancels_per_id": dict(cancels),
        "cancels_refused_429": sum(1 for e in cancel_calls if e["status"] == 429),
        "ids_cancelled_twice_or_more": {i: n for i, n in cancels.items() if n > 1},
        "tries_allowed": tries_allowed,
        "retried_task_instances": retried,
        "emulator_requests": len(emulator_log),
    }


def _state(item: dict[str, Any]) -> str:
    # The admin listing's own word for the request's state (see the emulator's STATES).
    return str(item.get("state") or item.get("_state") or "?")


def windows_report(log: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    by_window: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for entry in log:
        by_window[int(entry["t"] // WINDOW)].append(entry)
    report = []
    for index in sorted(by_window):
        entries = by_window[index]
        refused = [e for e in entries if e["status"] == 429]
        per_process = collections.Counter(f"{e['component']}/{e['pid']}" for e in entries)
        refused_per_process = collections.Counter(f"{e['component']}/{e['pid']}" for e in refused)
        report.append(
            {
                "window_start": index * WINDOW,
                "limit": limit,
                "received": len(entries),
                "accepted": len(entries) - len(refused),
                "refused_429": len(refused),
                "processes_sending": len(per_process),
                "requests_per_process": dict(per_process),
                "429_per_process": dict(refused_per_process),
            }
        )
    return report


def rate_report(
    log: list[dict[str, Any]], limit: int, share: int | None, callers: int, failures: Failures
) -> dict[str, Any]:
    windows = windows_report(log, limit)
    first = windows[0]["window_start"] if windows else 0
    # A killed process's window is excluded from nothing: its replacement starts with no budget.
    over = [w for w in windows if w["window_start"] != first and w["received"] > w["limit"]]
    many = [
        w for w in windows if w["processes_sending"] > 1 and any(n > 1 for n in w["429_per_process"].values())
    ]
    failures.check(not over, f"windows above the limit after the first: {[w['window_start'] for w in over]}")
    failures.check(
        not many, f"windows with more than one 429 for a process: {[w['window_start'] for w in many]}"
    )
    return {
        "limit_per_window": limit,
        "window_seconds": WINDOW,
        "share_max_requests_per_minute": share,
        "callers_at_once": callers,
        "windows": windows,
        "total_requests": len(log),
        "total_429": sum(w["refused_429"] for w in windows),
    }


def print_windows(report: dict[str, Any]) -> None:
    limit, share = report["limit_per_window"], report["share_max_requests_per_minute"]
    print(f"  per {WINDOW}-s window (limit {limit}; max_requests_per_minute of each process {share}):")
    print("    window     received accepted 429  processes  429s per process")
    for w in report["windows"]:
        start = time.strftime("%H:%M:%S", time.gmtime(w["window_start"]))
        print(
            f"    {start}  {w['received']:8} {w['accepted']:8} {w['refused_429']:4}"
            f" {w['processes_sending']:10}  {w['429_per_process'] or '-'}"
        )


def judge_oauth(emulator: Emulator, failures: Failures) -> dict[str, Any]:
    """
    An OAuth run: the processes refreshed across several token lifetimes, and the app was never
    locked out (any refresh refused as superseded was followed by one that succeeded).
    """
    refreshes = emulator.admin("GET", "oauth/refreshes")
    statuses = collections.Counter(f"{r['status']} {r['error_name']}".strip() for r in refreshes)
    unauthorized = sum(1 for e in emulator.requests_log() if e["status"] == 401)
    failures.check(statuses["200"] >= 3, f"fewer than 3 refreshes answered 200: {dict(statuses)}")
    failures.check(not refreshes or refreshes[-1]["status"] == 200, "the last refresh was refused")
    failures.check(
        not any(r["error_name"] == "invalid_client" for r in refreshes),
        "a refresh was refused invalid_client",
    )
    span = (refreshes[-1]["time"] - refreshes[0]["time"]) if refreshes else 0.0
    print(
        f"  token refreshes: {dict(statuses)} over {span:.0f} s; API calls answered 401: {unauthorized}",
        flush=True,
    )
    return {"refreshes": dict(statuses), "span_seconds": span, "api_calls_answered_401": unauthorized}
