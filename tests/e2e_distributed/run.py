"""
The provider on a distributed Airflow, with faults (``make e2e-distributed``).

1. Starts PostgreSQL and Redis (Debian's packages, as their own users, free ports, throw-away
   directories), the emulator at a scaled-down rate limit behind a metering pass-through, and
   Airflow 3 with CeleryExecutor: api-server, scheduler, dag-processor, two Celery workers and two
   triggerers, each its own process.
2. Seeds stale requests (the clean-up's work) mixed with fresh, signed and declined ones, and a few
   fresh ones for the manual DAG.
3. Unpauses the clean-up DAG (its scheduled run is a dry run: the Variable is not set yet), checks
   it cancelled nothing, arms it, triggers it, and triggers the manual DAG, whose cancellation it
   approves as the approval form's **Approve** button does once the run asks.
4. While they run: SIGKILLs one Celery worker (its whole session, task processes included) in the
   middle of a cancel batch, and one triggerer while confirmations are deferred on it.
5. Judges by the emulator's final state and request log, and the meter's per-process log: every
   stale request cancelled and confirmed, nothing else touched, cancels per id within what the
   tries allow, every task instance finished, and per 60-second window the requests the account
   received against its limit and every 429, per process.

Evidence goes to ``build/e2e-distributed/`` (``summary.json``, component logs, task logs, the meter's
log). Every process is stopped by process group and session on success, failure, Ctrl-C or SIGTERM.

Usage: ``.venv/bin/python tests/e2e_distributed/run.py [--stale N] [--rate-limit N] [--share N|none]``
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import (
    TRIGGERERS,
    WORKERS,
    DistributedStack,
    ensure_debian_packages,
    kill_session,
    wait_gone,
)
from stack import REPO, StackError, dump_json

CLEANUP = "dropbox_sign_expiry_cleanup"
MANUAL = "dropbox_sign_cancel_request"
ARMED_VARIABLE = "dropbox_sign_cleanup_armed"
POOL = "dropbox_sign_api"
#: The clean-up's default max_cancellations: its scheduled run refuses more stale requests than this.
MAX_CANCELLATIONS = 200
DAY = 86400
WINDOW = 60
OVERALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 600
#: Processes that may call the API at once: the pool's slots (the clean-up's API tasks), the manual
#: DAG's cancel task (default pool) and each triggerer.
POOL_SLOTS = 2
CALLERS = POOL_SLOTS + 1 + len(TRIGGERERS)


class Interrupted(Exception):
    """SIGTERM, SIGINT or SIGHUP arrived: unwind through the ``finally`` that stops everything."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGALRM:
        raise TimeoutError(f"the distributed run took longer than {OVERALL_TIMEOUT_S} s")
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def check(condition: bool, message: str, failures: list[str]) -> None:
    if not condition:
        failures.append(message)
        print(f"  FAIL: {message}", flush=True)


class Timer:
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

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)


# -- seeding -------------------------------------------------------------------------------------


def seed(stack: DistributedStack, stale: int) -> dict[str, list[str]]:
    now = int(time.time())
    kinds: dict[str, list[dict[str, Any]]] = {
        "stale": [{"title": f"stale {n}", "created_at": now - 45 * DAY} for n in range(stale)],
        "fresh": [{"title": f"fresh {n}", "created_at": now - 3 * DAY} for n in range(40)],
        "signed": [
            {"title": f"signed {n}", "created_at": now - 60 * DAY, "is_complete": True} for n in range(20)
        ],
        "declined": [
            {"title": f"declined {n}", "created_at": now - 50 * DAY, "is_declined": True} for n in range(20)
        ],
        "manual": [{"title": f"manual {n}", "created_at": now - DAY} for n in range(5)],
    }
    ids: dict[str, list[str]] = {}
    for kind, items in kinds.items():
        created = stack.admin("POST", "signature_requests", [{"expires_at": None, **item} for item in items])
        ids[kind] = [item["signature_request_id"] for item in created]
    return ids


# -- Airflow -------------------------------------------------------------------------------------


def wait_for_dag(stack: DistributedStack, dag_id: str) -> None:
    def probe() -> bool | None:
        for error in stack.api("GET", "importErrors")["import_errors"]:
            if Path(error["filename"]).name == f"{dag_id}.py":
                raise StackError(f"{error['filename']} does not import:\n{error['stack_trace']}")
        return True if stack.api_response("GET", f"dags/{dag_id}").status_code == 200 else None

    stack.wait_for(f"the DAG {dag_id} to be parsed", probe, 180, 1.0)


def runs(stack: DistributedStack, dag_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = stack.api("GET", f"dags/{dag_id}/dagRuns")["dag_runs"]
    return found


def task_instances(stack: DistributedStack, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
    found: list[dict[str, Any]] = stack.api("GET", path, params={"limit": 100})["task_instances"]
    return found


def approve_when_asked(stack: DistributedStack, run_id: str) -> bool:
    """
    Approve the manual run's cancellation once it waits for a person, with the call its form's
    **Approve** button makes; whether it has been answered.
    """
    path = f"dags/{MANUAL}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/approve"
    if stack.api("GET", path)["state"] not in ("awaiting_input", "deferred"):
        return False
    stack.api("PATCH", f"{path}/-1/hitlDetails", json={"chosen_options": ["Approve"], "params_input": {}})
    print("  approved the manual run's cancellation", flush=True)
    return True


def trigger(stack: DistributedStack, dag_id: str, conf: dict[str, Any]) -> str:
    run = stack.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    return str(run["dag_run_id"])


# -- the meter's log -----------------------------------------------------------------------------


def meter_log(stack: DistributedStack) -> list[dict[str, Any]]:
    path = stack.log_dir / "meter.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def is_cancel(entry: dict[str, Any]) -> bool:
    return entry["method"] == "POST" and "/signature_request/cancel/" in entry["path"]


def is_get(entry: dict[str, Any]) -> bool:
    return (
        entry["method"] == "GET"
        and entry["path"].startswith("/v3/signature_request/")
        and (not entry["path"].endswith("/list"))
    )


class FaultInjector:
    """
    SIGKILLs one Celery worker mid cancel batch and one triggerer while it holds deferred
    confirmations, judging "mid batch" and "holds" from the meter's log (what each sends).
    """

    def __init__(self, stack: DistributedStack, timer: Timer) -> None:
        self.stack = stack
        self.timer = timer
        self.cleanup_run = ""
        self.faults: list[dict[str, Any]] = []
        self.worker_done = False
        self.triggerer_done = False

    def poll(self) -> None:
        if self.worker_done and self.triggerer_done:
            return
        log = meter_log(self.stack)
        now = time.time()
        recent = [e for e in log if now - e["t"] < 15]
        if not self.worker_done:
            cancels: collections.Counter[tuple[str, Any]] = collections.Counter(
                (e["component"], e["pid"]) for e in log if is_cancel(e) and e["component"] in WORKERS
            )
            sending = {(e["component"], e["pid"]) for e in recent if is_cancel(e)}
            for (component, pid), count in cancels.items():
                # Mid batch: this task process has cancelled some of its 50 ids and is still going.
                if count >= 8 and (component, pid) in sending and count < 40:
                    self.kill(component, f"task process {pid} had sent {count} cancels of its batch")
                    self.worker_done = True
                    break
        if not self.triggerer_done:
            gets = collections.Counter(
                e["component"] for e in recent if is_get(e) and e["component"] in TRIGGERERS
            )
            deferred = self.deferred() if gets else 0
            if deferred:
                component, count = gets.most_common(1)[0]
                if count >= 5:
                    why = (
                        f"it had sent {count} confirmation GETs in the last 15 s; {deferred} batches deferred"
                    )
                    self.kill(component, why)
                    self.triggerer_done = True

    def deferred(self) -> int:
        """How many of the clean-up's cancel batches wait on a triggerer right now."""
        if not self.cleanup_run:
            return 0
        instances = task_instances(self.stack, CLEANUP, self.cleanup_run)
        return sum(1 for ti in instances if ti["task_id"] == "cancel" and ti["state"] == "deferred")

    def kill(self, name: str, why: str) -> None:
        leader = self.stack.component(name).popen.pid
        pids = kill_session(leader)
        wait_gone(pids)
        self.stack.drop(name)
        fault = {
            "at_s": self.timer.now(),
            "at": time.time(),
            "component": name,
            "signal": "SIGKILL",
            "pids": pids,
            "why": why,
        }
        self.faults.append(fault)
        print(f"  SIGKILL {name} ({len(pids)} processes) at {fault['at_s']} s: {why}", flush=True)


# -- judging -------------------------------------------------------------------------------------


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


def judge(
    stack: DistributedStack,
    ids: dict[str, list[str]],
    failures: list[str],
    tis: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    state = {item["signature_request_id"]: item for item in stack.admin("GET", "signature_requests")}
    emulator_log = stack.admin("GET", "requests_log")
    cancel_calls = [e for e in emulator_log if e["method"] == "POST" and "/cancel/" in e["path"]]
    # A cancel refused with 429 never reached the account's requests: it cancelled nothing.
    cancels: collections.Counter[str] = collections.Counter(
        e["path"].rsplit("/", 1)[1] for e in cancel_calls if e["status"] != 429
    )
    states = {kind: collections.Counter(_state(state[i]) for i in group) for kind, group in ids.items()}
    for kind in ("stale", "manual"):
        check(
            states[kind] == {"canceled": len(ids[kind])},
            f"{kind} requests not all canceled: {states[kind]}",
            failures,
        )
    for kind in ("fresh", "signed", "declined"):
        touched = [i for i in ids[kind] if cancels[i]]
        check(not touched, f"{len(touched)} {kind} requests were sent a cancel: {touched[:5]}", failures)
    expected = {"fresh": "awaiting_signature", "signed": "completed", "declined": "declined"}
    for kind, want in expected.items():
        check(
            states[kind] == {want: len(ids[kind])}, f"{kind} requests changed state: {states[kind]}", failures
        )
    # One cancel per id per try of the task instance that handled it: no re-cancel is due within a
    # run this short (the 60-minute rule), so a second cancel can only come from a retried batch.
    tries_allowed = max(
        (ti["try_number"] for ti in tis.get(CLEANUP, []) if ti["task_id"] == "cancel"), default=1
    )
    over = {i: n for i, n in cancels.items() if n > tries_allowed}
    check(not over, f"ids cancelled more often than the tries allow ({tries_allowed}): {over}", failures)
    # The manual run asks for approval and is approved; the clean-up, under its cap, asks nobody, so
    # its branch skips the approval.
    expected_skips = {(CLEANUP, "approve")}
    for dag_id, instances in tis.items():
        bad = [
            (ti["task_id"], ti.get("map_index"), ti["state"])
            for ti in instances
            if ti["state"] != "success"
            and not (ti["state"] == "skipped" and (dag_id, ti["task_id"]) in expected_skips)
        ]
        check(not bad, f"{dag_id}: task instances not successful: {bad}", failures)
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


def rate_report(
    stack: DistributedStack, log: list[dict[str, Any]], faults: list[dict[str, Any]], failures: list[str]
) -> dict[str, Any]:
    windows = windows_report(log, stack.rate_limit)
    first = windows[0]["window_start"] if windows else 0
    # A killed process's window is excluded from nothing: its replacement starts with no budget.
    over = [w for w in windows if w["window_start"] != first and w["received"] > w["limit"]]
    many = [
        w for w in windows if w["processes_sending"] > 1 and any(n > 1 for n in w["429_per_process"].values())
    ]
    check(not over, f"windows above the limit after the first: {[w['window_start'] for w in over]}", failures)
    check(
        not many,
        f"windows with more than one 429 for a process: {[w['window_start'] for w in many]}",
        failures,
    )
    return {
        "limit_per_window": stack.rate_limit,
        "window_seconds": WINDOW,
        "share_max_requests_per_minute": stack.share,
        "callers_at_once": CALLERS,
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


def listening(ports: list[int]) -> list[int]:
    left = []
    for port in ports:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                left.append(port)
    return left


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="The provider on a distributed Airflow, with faults.")
    parser.add_argument(
        "--stale", type=int, default=MAX_CANCELLATIONS, help=f"stale requests (at most {MAX_CANCELLATIONS})"
    )
    parser.add_argument("--rate-limit", type=int, default=180, help="the emulator's requests per 60 s")
    parser.add_argument(
        "--share",
        default="auto",
        help="max_requests_per_minute of every process: auto (limit / callers), none, or N",
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "e2e-distributed")
    args = parser.parse_args()
    # Components run in the throw-away home: every path they are given must be absolute.
    args.out = args.out.resolve()
    if args.stale > MAX_CANCELLATIONS:
        parser.error(f"--stale: the scheduled run cancels at most max_cancellations={MAX_CANCELLATIONS}")
    share = (
        None
        if args.share == "none"
        else args.rate_limit // CALLERS
        if args.share == "auto"
        else int(args.share)
    )

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, _on_signal)
    signal.alarm(OVERALL_TIMEOUT_S)

    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "tasks").mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="e2e-dist-home-"))
    timer = Timer()
    failures: list[str] = []
    summary: dict[str, Any] = {"ok": False, "failures": failures}
    stack = DistributedStack(
        log_dir=args.out,
        home=home,
        dags_folder=REPO / "dags",
        api_key=secrets.token_hex(16),
        rate_limit=args.rate_limit,
        share=share,
    )
    stack.scratch.append(home)
    ports: list[int] = []
    try:
        with timer.phase("install PostgreSQL and Redis if missing"):
            ensure_debian_packages()
        with timer.phase("start PostgreSQL, Redis, the emulator and the meter"):
            stack.start_postgres()
            stack.start_redis()
            stack.start_emulator()
        with timer.phase("start Airflow (CeleryExecutor, 2 workers, 2 triggerers)"):
            stack.start_airflow()
        ports = [
            stack.pg_port,
            stack.redis_port,
            *stack.meter_ports.values(),
            int(stack.emulator_url.rsplit(":", 1)[1]),
            int(stack.airflow_url.rsplit(":", 1)[1]),
        ]
        with timer.phase("seed the emulator"):
            ids = seed(stack, args.stale)
            print(f"  {', '.join(f'{len(v)} {k}' for k, v in ids.items())}", flush=True)
        injector = FaultInjector(stack, timer)
        with timer.phase("the armed clean-up and a manual run, with a worker and a triggerer SIGKILLed"):
            stack.api(
                "POST",
                "pools",
                json={
                    "name": POOL,
                    "slots": POOL_SLOTS,
                    "include_deferred": False,
                    "description": "Dropbox Sign",
                },
            )
            # Armed before it is unpaused: the run the scheduler creates on unpausing is the clean-up.
            stack.api("POST", "variables", json={"key": ARMED_VARIABLE, "value": "true"})
            for dag_id in (CLEANUP, MANUAL):
                wait_for_dag(stack, dag_id)
                stack.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
            cleanup_run = stack.wait_for(
                "the clean-up's scheduled run",
                lambda: (runs(stack, CLEANUP) or [{}])[0].get("dag_run_id"),
                60,
                1.0,
            )
            manual_run = trigger(stack, MANUAL, {"signature_request_ids": ids["manual"]})
            injector.cleanup_run = cleanup_run
            deadline = time.monotonic() + RUN_TIMEOUT_S
            states: dict[str, str] = {}
            approved = False
            while time.monotonic() < deadline:
                stack.check_alive()
                injector.poll()
                approved = approved or approve_when_asked(stack, manual_run)
                for dag_id, run_id in ((CLEANUP, cleanup_run), (MANUAL, manual_run)):
                    run = stack.api("GET", f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
                    if run["state"] in ("success", "failed"):
                        states[dag_id] = run["state"]
                if len(states) == 2:
                    break
                time.sleep(2)
            else:
                raise StackError(f"the runs did not finish in {RUN_TIMEOUT_S} s: {states}")
            for dag_id, state in states.items():
                check(state == "success", f"{dag_id} ended {state}", failures)
            check(injector.worker_done, "no Celery worker was killed mid cancel batch", failures)
            check(
                injector.triggerer_done, "no triggerer was killed while confirmations were deferred", failures
            )
        with timer.phase("judge by the emulator and the meter"):
            tis = {
                CLEANUP: task_instances(stack, CLEANUP, cleanup_run),
                MANUAL: task_instances(stack, MANUAL, manual_run),
            }
            summary["verdict"] = judge(stack, ids, failures, tis)
            log = meter_log(stack)
            summary["rate_limit"] = rate_report(stack, log, injector.faults, failures)
            emulator_count = summary["verdict"]["emulator_requests"]
            check(
                len(log) == emulator_count,
                f"the meter saw {len(log)} requests, the emulator {emulator_count}",
                failures,
            )
            summary["faults"] = injector.faults
            summary["task_instances"] = {
                dag_id: [
                    {
                        k: ti.get(k)
                        for k in (
                            "task_id",
                            "map_index",
                            "state",
                            "try_number",
                            "hostname",
                            "start_date",
                            "end_date",
                        )
                    }
                    for ti in instances
                ]
                for dag_id, instances in tis.items()
            }
            print_windows(summary["rate_limit"])
            verdict = summary["verdict"]
            print(
                f"  cancels per id (count of ids by cancels received): {verdict['cancels_per_id_histogram']}"
            )
            print(f"  retried task instances: {verdict['retried_task_instances']}")
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        print(f"  FAIL: {type(exc).__name__}: {exc}", flush=True)
    finally:
        signal.alarm(0)
        # A second Ctrl-C or SIGTERM must not cut the stop short and leave processes behind.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        with timer.phase("stop every process"):
            stack.stop()
            left = listening(ports)
            check(not left, f"ports still listening after the stop: {left}", failures)
        summary["phases_s"] = timer.phases
        summary["total_s"] = timer.now()
        summary["ok"] = not failures
        dump_json(args.out / "summary.json", summary)
        print(
            f"== {'PASSED' if not failures else 'FAILED'} in {summary['total_s']} s; evidence in {args.out}"
        )
        for failure in failures:
            print(f"  - {failure}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
