"""
The processes an end-to-end run starts, watches and stops.

Every process starts in its own session, so stopping its process group also stops what it
spawned (uvicorn workers, LocalExecutor workers, task supervisors); what left its group is still
in its session, and the sweep after the stop finds it there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")


class StackError(RuntimeError):
    """A component did not come up, or died."""


def free_port() -> int:
    """A TCP port free on loopback right now (the process that binds it does so a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(ports: list[int]) -> list[int]:
    """Those of ``ports`` that something still listens on, on loopback."""
    left = []
    for port in ports:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                left.append(port)
    return left


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for failure messages."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def sessions_of(leaders: set[int]) -> list[int]:
    """Every live pid whose session leader is one of ``leaders`` (what a process group may miss)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        # Field 6 is the session id; the command name (field 2) may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) in leaders:
            found.append(int(entry.name))
    return found


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)


@dataclass
class Component:
    """
    One started process: its name, its Popen handle and where its output goes.

    :param first_signal: sent to the process alone before its group gets SIGTERM, for a server
        whose SIGTERM is not its fastest shutdown.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    first_signal: int | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None


class Processes:
    """
    Start processes in their own sessions, watch them, and stop every one of them.

    :param log_dir: where each process's output goes (``<name>.log``).
    :param cwd: the working directory of every process (the run's throw-away home).
    """

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        #: The processes watched by :meth:`check_alive`, in the order they started.
        self.components: list[Component] = []
        #: Killed on purpose, no longer watched.
        self.killed: list[Component] = []
        self._sessions: set[int] = set()

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        first_signal: int | None = None,
    ) -> Component:
        log = self.log_dir / f"{name}.log"
        handle = log.open("ab")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            handle.close()
        component = Component(name, popen, log, first_signal)
        self.components.append(component)
        self._sessions.add(popen.pid)
        print(f"  started {name} (pid {popen.pid}), log {log}", flush=True)
        return component

    def run(self, name: str, argv: list[str], env: Mapping[str, str], timeout: float) -> None:
        """Run a one-off command to its end (``airflow db migrate``); raise when it fails."""
        once = self.spawn(name, argv, env)
        status = once.popen.wait(timeout=timeout)
        # Done: from here on check_alive() watches only the long-running components.
        self.components.remove(once)
        if status != 0:
            raise StackError(f"{name} failed with status {status}; end of {once.log}:\n{tail(once.log)}")

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def check_alive(self) -> None:
        """Raise naming the first component that exited, with the end of its log."""
        for component in self.components:
            if not component.alive():
                raise StackError(
                    f"{component.name} exited with status {component.popen.returncode}; "
                    f"end of {component.log}:\n{tail(component.log)}"
                )

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
        """Call ``probe`` until it returns something other than ``None``, watching the processes."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                result = probe()
            except (requests.RequestException, OSError, ValueError) as exc:
                last_error, result = exc, None
            if result is not None:
                return result
            time.sleep(interval)
        raise StackError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")

    def wait_for_file(self, what: str, path: Path, parse: Callable[[str], T]) -> T:
        """What a process writes to ``path`` once it listens (its port), parsed."""

        def written() -> T | None:
            text = path.read_text(encoding="utf-8").strip() if path.exists() else ""
            return parse(text) if text else None

        return self.wait_for(what, written, 30, 0.1)

    def kill(self, name: str) -> list[int]:
        """SIGKILL the component's whole session, as a machine that dies would; its pids."""
        component = self.component(name)
        pids = sessions_of({component.popen.pid})
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        wait_gone(pids)
        component.popen.wait(timeout=30)
        # Killed on purpose: check_alive() stops watching it.
        self.components.remove(component)
        self.killed.append(component)
        return pids

    def terminate(self, name: str, grace: float = 20) -> None:
        """
        Stop one component as an operator does before starting it again: SIGTERM to its group,
        SIGKILL for what is left after ``grace`` and for what is left in its session. It is no
        longer watched; a component started again under its name appends to the same log.
        """
        component = self.component(name)
        if component.first_signal is not None and component.alive():
            _kill(component.popen.pid, component.first_signal)
        _signal_group(component.popen.pid, signal.SIGTERM)
        try:
            component.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"  {name} still running {grace:g} s after SIGTERM; killing it", flush=True)
        _signal_group(component.popen.pid, signal.SIGKILL)
        component.popen.wait(timeout=30)
        left = sessions_of({component.popen.pid})
        for pid in left:
            _kill(pid, signal.SIGKILL)
        wait_gone(left)
        self.components.remove(component)
        print(f"  stopped {name} (pid {component.popen.pid})", flush=True)

    def stop(self) -> None:
        """
        Stop every started process group: SIGTERM, then SIGKILL for what is left after a grace;
        then SIGKILL whatever is left in their sessions.
        """
        for component in self.components:
            if component.first_signal is not None and component.alive():
                _kill(component.popen.pid, component.first_signal)
        for component in reversed(self.components):
            if component.alive():
                _signal_group(component.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for component in reversed(self.components):
            try:
                component.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {component.name} still running 20 s after SIGTERM; killing it", flush=True)
            # The leader may be gone while its workers are not: kill the whole group regardless.
            _signal_group(component.popen.pid, signal.SIGKILL)
            try:
                component.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                print(f"  {component.name} (pid {component.popen.pid}) did not exit", flush=True)
        self.components.clear()
        for pid in sessions_of(self._sessions):
            print(f"  pid {pid} outlived its component; killing it", flush=True)
            _kill(pid, signal.SIGKILL)
