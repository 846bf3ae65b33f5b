"""
``make tryout``: follow ``docs/try-it-locally.md`` literally, as a reader with three terminals
does, then check that it did what the page says.

The reader is given a throw-away ``HOME`` (the page works in ``~/dropbox-sign-try``), a ``PATH``
without this checkout's venv, no ``AIRFLOW_*`` variable, and the repository as working folder.
Only ``PIP_CONSTRAINT`` is added: the page's ``pip install .`` resolves the versions of ``uv.lock``,
so that the run checks the page and not the day's releases. Terminal 1 is one bash session fed
block after block (``set -e``: the first failing command ends the run); terminals 2 and 3 are
processes of their own, stopped with Ctrl-C (SIGINT to their group) when the page starts something
else in them. Each block's output goes to ``transcript.txt``; the evidence to ``build/tryout/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from scripts.check_wheel import lock_constraints
from tests.e2e.harness.lifecycle import Run
from tests.e2e.harness.processes import Processes, sessions_of, tail

from .page import PAGE, Block, page_blocks

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "build" / "tryout"
#: The page's fixed addresses: the reader's ports must be free.
AIRFLOW = "http://localhost:8080"
EMULATOR = "http://127.0.0.1:8125"
PORTS = (8080, 8125)
#: The install (Airflow and its dependencies, with pip) takes longest; any other block waits at most
#: this long for Airflow to start or a run to finish.
INSTALL_TIMEOUT = 900
BLOCK_TIMEOUT = 420
DONE = "::tryout-block-done::"


def reader_environment(home: Path, constraints: Path) -> dict[str, str]:
    """A new user's shell: nothing of this checkout's venv or Airflow settings."""
    venv_bin = str(REPO / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHON", "PIP_", "UV_"))
    }
    env.update(
        HOME=str(home),
        PATH=path,
        PIP_CONSTRAINT=str(constraints),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


class Terminal1:
    """One bash session that runs block after block and keeps its variables, as a terminal does."""

    def __init__(self, env: dict[str, str], transcript: Path) -> None:
        self.transcript = transcript.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._send("set -eo pipefail\n")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def run(self, block: Block, timeout: float) -> list[str]:
        """Run one block to its end; its output. Raises naming the page's line when it fails."""
        self.transcript.write(f"\n$ # docs/try-it-locally.md:{block.line}\n{block.text}")
        self._send(f"{block.text}\necho {DONE}\n")
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"the block at docs/try-it-locally.md:{block.line} ran longer than {timeout:.0f} s; "
                    f"its output so far:\n{''.join(output[-30:])}"
                ) from None
            if line is None:
                self.process.wait(timeout=10)
                raise AssertionError(
                    f"the block at docs/try-it-locally.md:{block.line} failed (exit status "
                    f"{self.process.returncode}); its output:\n{''.join(output[-30:])}"
                )
            # The block's last command may end its output without a newline (curl does).
            if line.rstrip("\n").endswith(DONE):
                rest = line.rstrip("\n")[: -len(DONE)]
                if rest:
                    output.append(rest + "\n")
                    self.transcript.write(rest + "\n")
                return output
            output.append(line)
            self.transcript.write(line)
            self.transcript.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.transcript.close()


def ctrl_c(processes: Processes, name: str, grace: float = 20) -> dict[str, Any]:
    """
    What the page tells the reader to do in a terminal: Ctrl-C (SIGINT to its foreground group),
    and once more when it is still running after a few seconds (``airflow standalone`` sometimes
    stays at "Shutting down components"). What it took, and what was still running after both.
    """
    component = processes.component(name)
    started = time.monotonic()
    presses = 0
    for _ in range(2):
        if not component.alive():
            break
        presses += 1
        os.killpg(component.popen.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.popen.wait(timeout=grace)
    left = sessions_of({component.popen.pid})
    # Whatever both presses left behind goes too, as the next start needs the ports.
    processes.terminate(name, grace=10)
    return {"presses": presses, "seconds": round(time.monotonic() - started, 1), "left_running": len(left)}


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def follow_page(run: Run, processes: Processes, env: dict[str, str]) -> dict[str, Any]:
    """Every block of the page, in order; what terminal 1 printed, by the block's line."""
    page = page_blocks()
    environment = next(block for block in page if block.environment)
    terminal = Terminal1(env, run.out / "transcript.txt")
    printed: dict[str, Any] = {}
    try:
        for index, block in enumerate(page):
            first_line = block.text.strip().splitlines()[0]
            with run.step(f"docs/try-it-locally.md:{block.line} (terminal {block.terminal}): {first_line}"):
                if block.long_running:
                    name = f"terminal-{block.terminal}"
                    if any(c.name == name for c in processes.components):
                        stopped = ctrl_c(processes, name)
                        run.summary.setdefault("ctrl_c", []).append({"terminal": block.terminal, **stopped})
                        print(f"  Ctrl-C in terminal {block.terminal}: {stopped}", flush=True)
                    processes.spawn(name, ["bash", "-c", f"{environment.text}{block.text}"], env=env)
                    continue
                timeout = INSTALL_TIMEOUT if index == 0 else BLOCK_TIMEOUT
                printed[str(block.line)] = "".join(terminal.run(block, timeout))
                processes.check_alive()
    finally:
        terminal.close()
    return printed


def check_outcome(run: Run) -> None:
    """What the page says the reader now has, checked against the emulator and Airflow themselves."""
    check = run.failures.check
    stored = requests.get(f"{EMULATOR}/_emulator/signature_requests", timeout=10).json()
    by_title = {item["title"]: item for item in stored}
    run.summary["requests"] = {item["title"]: item["state"] for item in stored}
    offer = by_title.get("Offer letter", {})
    check(
        offer.get("state") == "canceled", f"the request cancelled by hand is canceled: {offer.get('state')}"
    )
    for title in ("NDA - Acme", "NDA - Globex", "Contractor agreement - Initech"):
        state = by_title.get(title, {}).get("state")
        check(state == "canceled", f"the clean-up cancelled '{title}' (state {state})")
    today = by_title.get("Offer letter - today", {}).get("state")
    check(today == "awaiting_signature", f"the clean-up left the request sent today alone (state {today})")
    attempts = requests.get(f"{EMULATOR}/_emulator/callback_attempts", timeout=10).json()
    acknowledged = sorted({a["event_type"] for a in attempts if a["acknowledged"]})
    run.summary["events_acknowledged"] = acknowledged
    for event_type in ("callback_test", "signature_request_canceled"):
        check(event_type in acknowledged, f"the receiver acknowledged {event_type}: {acknowledged}")
    token = requests.post(
        f"{AIRFLOW}/auth/token", json={"username": "admin", "password": "admin"}, timeout=10
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    def runs(dag_id: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{AIRFLOW}/api/v2/dags/{dag_id}/dagRuns", headers=auth, timeout=10)
        return list(answer.json()["dag_runs"])

    states = {
        dag_id: [(r["dag_run_id"], r["state"]) for r in runs(dag_id)]
        for dag_id in (
            "dropbox_sign_cancel_request",
            "dropbox_sign_expiry_cleanup",
            "dropbox_sign_cancellation_audit",
        )
    }
    run.summary["runs"] = states
    check(("try-1", "success") in states["dropbox_sign_cancel_request"], f"try-1 succeeded: {states}")
    check(("try-armed", "success") in states["dropbox_sign_expiry_cleanup"], f"try-armed succeeded: {states}")
    check(
        any(state == "success" for _, state in states["dropbox_sign_cancellation_audit"]),
        f"the audit DAG recorded the events: {states}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=int, default=2400, help="the whole run's watchdog, seconds")
    args = parser.parse_args(argv)
    # A terminal's Ctrl-C stops Airflow only if SIGINT is not ignored: a command started in the
    # background by a shell (``make tryout &``) inherits it ignored, and so would Airflow.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = Run("TRYOUT", OUT, args.timeout, "dropbox-sign-tryout-home-")
    busy = [port for port in PORTS if not port_free(port)]
    if busy:
        print(f"TRYOUT cannot start: the page's ports {busy} are taken on loopback", file=sys.stderr)
        return 2
    processes = Processes(run.out, REPO)
    with run.guarded(processes.stop):
        constraints = run.out / "constraints.txt"
        lock_constraints(constraints)
        env = reader_environment(run.home, constraints)
        print(f"Following {PAGE.relative_to(REPO)} with HOME={run.home}", flush=True)
        run.summary["printed"] = follow_page(run, processes, env)
        with run.step("check what the page promises"):
            check_outcome(run)
    if run.failures:
        for log in sorted(run.out.glob("terminal-*.log")):
            print(f"--- end of {log}:\n{tail(log)}", file=sys.stderr)
    return run.verdict(
        "a confirmed cancellation approved through the REST API, a dry then an armed clean-up, "
        "and audited events, every command as the page has it"
    )


if __name__ == "__main__":
    sys.exit(main())
