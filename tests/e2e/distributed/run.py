"""
The provider on a distributed Airflow, with faults (``make e2e-distributed``).

1. Starts PostgreSQL and Redis (Debian's packages, as their own users, free ports, throw-away
   directories), the emulator at a scaled-down rate limit behind a metering pass-through, and
   Airflow 3 with CeleryExecutor: api-server, scheduler, dag-processor, two Celery workers and two
   triggerers, each its own process, all with the clean-up armed by the deployment's
   configuration (``[dropbox_sign] armed = True``).
2. Seeds stale requests (the clean-up's work) mixed with fresh, signed and declined ones, and a few
   fresh ones for the manual DAG.
3. Unpauses the clean-up DAG, whose scheduled run is the clean-up, and triggers the manual DAG,
   whose cancellation it approves as the approval form's **Approve** button does once the run
   asks.
4. While they run: SIGKILLs one Celery worker (its whole session, task processes included) in the
   middle of a cancel batch, and one triggerer while confirmations are deferred on it.
5. Judges by the emulator's final state and request log, and the meter's per-process log: every
   stale request cancelled and confirmed, nothing else touched, cancels per id within what the
   tries allow, every task instance finished, and per 60-second window the requests the account
   received against its limit and every 429, per process.

Evidence goes to ``build/e2e-distributed/`` (``summary.json``, component logs, task logs, the meter's
log). Every process is stopped by process group and session on success, failure, Ctrl-C or SIGTERM.

Usage, from the repository's root: ``.venv/bin/python -m tests.e2e.distributed.run [--stale N]
[--rate-limit N] [--share N|none] [--out DIR]``
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from ..harness import REPO
from ..harness.airflow import TERMINAL_RUN_STATES, Airflow
from ..harness.emulator import Emulator
from ..harness.lifecycle import Run
from ..harness.processes import Processes, StackError, listening
from ..harness.steps import Failures
from .faults import FaultInjector
from .judge import judge, judge_oauth, print_windows, rate_report
from .meter import read_log
from .services import COMPONENTS, POOL, TRIGGERERS, CeleryAirflow, Services, ensure_debian_packages

CLEANUP = "dropbox_sign_expiry_cleanup"
MANUAL = "dropbox_sign_cancel_request"
#: The clean-up's default max_cancellations: its scheduled run refuses more stale requests than this.
MAX_CANCELLATIONS = 200
DAY = 86400
OVERALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 600
#: Processes that may call the API at once: the pool's slots (the clean-up's API tasks), the manual
#: DAG's cancel task (default pool) and each triggerer.
POOL_SLOTS = 2
CALLERS = POOL_SLOTS + 1 + len(TRIGGERERS)
#: What summary.json keeps of each task instance.
TASK_INSTANCE_FIELDS = ("task_id", "map_index", "state", "try_number", "hostname", "start_date", "end_date")


def seed(emulator: Emulator, stale: int) -> dict[str, list[str]]:
    """The clean-up's stale requests among fresh, signed and declined ones; and the manual DAG's."""
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
    ids = {
        kind: emulator.seed([{"expires_at": None, **item} for item in items]) for kind, items in kinds.items()
    }
    print(f"  {', '.join(f'{len(v)} {k}' for k, v in ids.items())}", flush=True)
    return ids


def start_runs(airflow: Airflow, manual_ids: list[str]) -> dict[str, str]:
    """The pool, the clean-up unpaused (its scheduled run, armed), a manual run; their run ids."""
    airflow.api(
        "POST",
        "pools",
        json={"name": POOL, "slots": POOL_SLOTS, "include_deferred": False, "description": "Dropbox Sign"},
    )
    # Armed by the deployment from the start: the run the scheduler creates on unpausing cancels.
    for dag_id in (CLEANUP, MANUAL):
        airflow.wait_for_dag(dag_id, 180)
        airflow.unpause(dag_id)
    cleanup_run = airflow.wait_for(
        "the clean-up's scheduled run", lambda: (airflow.runs(CLEANUP) or [{}])[0].get("dag_run_id"), 60, 1.0
    )
    return {CLEANUP: cleanup_run, MANUAL: airflow.trigger(MANUAL, {"signature_request_ids": manual_ids})}


def approve_when_asked(airflow: Airflow, run_id: str) -> bool:
    """
    Approve the manual run's cancellation once it waits for a person, with the call its form's
    **Approve** button makes; whether it has been answered.
    """
    path = airflow.run_path(MANUAL, run_id, "approve")
    if airflow.api("GET", path)["state"] not in ("awaiting_input", "deferred"):
        return False
    airflow.api("PATCH", f"{path}/-1/hitlDetails", json={"chosen_options": ["Approve"], "params_input": {}})
    print("  approved the manual run's cancellation", flush=True)
    return True


def finish_with_faults(
    airflow: Airflow, runs: dict[str, str], injector: FaultInjector, failures: Failures
) -> None:
    """Approve the manual run and inject the faults while both runs go on; both must succeed."""
    injector.cleanup_run = runs[CLEANUP]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    states: dict[str, str] = {}
    approved = False
    while time.monotonic() < deadline:
        airflow.processes.check_alive()
        injector.poll()
        approved = approved or approve_when_asked(airflow, runs[MANUAL])
        for dag_id, run_id in runs.items():
            state = airflow.api("GET", airflow.run_path(dag_id, run_id))["state"]
            if state in TERMINAL_RUN_STATES:
                states[dag_id] = state
        if len(states) == 2:
            break
        time.sleep(2)
    else:
        raise StackError(f"the runs did not finish in {RUN_TIMEOUT_S} s: {states}")
    for dag_id, state in states.items():
        failures.check(state == "success", f"{dag_id} ended {state}")
    failures.check(injector.worker_done, "no Celery worker was killed mid cancel batch")
    failures.check(injector.triggerer_done, "no triggerer was killed while confirmations were deferred")


def judge_all(
    airflow: Airflow,
    services: Services,
    share: int | None,
    ids: dict[str, list[str]],
    runs: dict[str, str],
    failures: Failures,
) -> dict[str, Any]:
    """The verdict, the rate-limit report and the task instances, for summary.json."""
    tis = {dag_id: airflow.task_instances(dag_id, run_id) for dag_id, run_id in runs.items()}
    verdict = judge(services.emulator, ids, failures, tis)
    log = read_log(services.meter_log)
    report = rate_report(log, services.rate_limit, share, CALLERS, failures)
    failures.check(
        len(log) == verdict["emulator_requests"],
        f"the meter saw {len(log)} requests, the emulator {verdict['emulator_requests']}",
    )
    print_windows(report)
    print(f"  cancels per id (count of ids by cancels received): {verdict['cancels_per_id_histogram']}")
    print(f"  retried task instances: {verdict['retried_task_instances']}")
    return {
        "verdict": verdict,
        "rate_limit": report,
        "task_instances": {
            dag_id: [{k: ti.get(k) for k in TASK_INSTANCE_FIELDS} for ti in instances]
            for dag_id, instances in tis.items()
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--oauth",
        action="store_true",
        help="every component on an API app's connection: 60-second tokens, rotated, the replaced refused",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = REPO / "build" / ("e2e-distributed-oauth" if args.oauth else "e2e-distributed")
    if args.stale > MAX_CANCELLATIONS:
        parser.error(f"--stale: the scheduled run cancels at most max_cancellations={MAX_CANCELLATIONS}")
    args.share = (
        None
        if args.share == "none"
        else args.rate_limit // CALLERS
        if args.share == "auto"
        else int(args.share)
    )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Components run in the throw-away home: every path they are given is absolute.
    run = Run("E2E-DISTRIBUTED", args.out, OVERALL_TIMEOUT_S, "e2e-dist-home-")
    processes = Processes(run.out, cwd=run.home)
    emulator = Emulator(processes, secrets.token_hex(16), run.home / "emulator.port")
    services = Services(processes, emulator, run.out, args.rate_limit, oauth=args.oauth)
    airflow = CeleryAirflow(services, REPO / "dags", args.share)
    injector = FaultInjector(airflow, services.meter_log, run.timer)
    run.summary["faults"] = injector.faults

    def stop() -> None:
        ports = [*services.ports(), *(app.port for app in (emulator, airflow) if app.url)]
        processes.stop()
        services.remove_scratch()
        left = listening(ports)
        run.failures.check(not left, f"ports still listening after the stop: {left}")

    with run.guarded(stop):
        with run.step("install PostgreSQL and Redis if missing"):
            ensure_debian_packages()
        with run.step("start PostgreSQL, Redis, the emulator and the meter"):
            services.start_postgres()
            services.start_redis()
            services.start_emulator()
        with run.step("start Airflow (CeleryExecutor, 2 workers, 2 triggerers)"):
            airflow.start(COMPONENTS, migrate_timeout=300, healthy_timeout=300)
        with run.step("seed the emulator"):
            ids = seed(emulator, args.stale)
        with run.step("the armed clean-up and a manual run, with a worker and a triggerer SIGKILLed"):
            runs = start_runs(airflow, ids["manual"])
            finish_with_faults(airflow, runs, injector, run.failures)
        with run.step("judge by the emulator and the meter"):
            run.summary.update(judge_all(airflow, services, args.share, ids, runs, run.failures))
            if args.oauth:
                run.summary["oauth"] = judge_oauth(emulator, run.failures)
    return run.verdict("every stale request cancelled once a try, nothing else, no window over the limit")


if __name__ == "__main__":
    sys.exit(main())
