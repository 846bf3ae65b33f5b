"""The faults of the distributed run: a Celery worker and a triggerer SIGKILLed mid-work."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

from ..harness.airflow import Airflow
from ..harness.steps import Timer
from .meter import is_cancel, is_get, read_log
from .services import TRIGGERERS, WORKERS

CLEANUP = "dropbox_sign_expiry_cleanup"


class FaultInjector:
    """
    SIGKILLs one Celery worker mid cancel batch and one triggerer while it holds deferred
    confirmations, judging "mid batch" and "holds" from the meter's log (what each sends).
    """

    def __init__(self, airflow: Airflow, meter_log: Path, timer: Timer) -> None:
        self.airflow = airflow
        self.meter_log = meter_log
        self.timer = timer
        self.cleanup_run = ""
        self.faults: list[dict[str, Any]] = []
        self.worker_done = False
        self.triggerer_done = False

    def poll(self) -> None:
        if self.worker_done and self.triggerer_done:
            return
        log = read_log(self.meter_log)
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
        instances = self.airflow.task_instances(CLEANUP, self.cleanup_run)
        return sum(1 for ti in instances if ti["task_id"] == "cancel" and ti["state"] == "deferred")

    def kill(self, name: str, why: str) -> None:
        """SIGKILL the component's whole session (the worker and its task processes, say)."""
        pids = self.airflow.processes.kill(name)
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
