"""
The processes of the end-to-end run: the Dropbox Sign emulator and a local Airflow deployment
(api-server, scheduler, dag-processor, triggerer; LocalExecutor; SQLite) in a throw-away home.

Every process starts in its own session, so stopping its process group also stops what it
spawned (uvicorn workers, LocalExecutor workers, task supervisors).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

T = TypeVar("T")

#: Seconds one REST call may take; and how long a GET is retried while the server stalls.
API_TIMEOUT = 30
API_PATIENCE = 90


class StackError(RuntimeError):
    """A component did not come up, or died."""


def free_port() -> int:
    """A TCP port free on loopback right now (the api-server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for failure messages."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Component:
    """One started process: its name, its Popen handle and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Stack:
    """
    Start and stop the emulator and Airflow.

    :param log_dir: where component logs go (``<name>.log``), and Airflow's task logs (``tasks/``).
    :param home: the throw-away ``AIRFLOW_HOME`` (configuration, SQLite database).
    :param dags_folder: the DAGs folder Airflow serves.
    :param api_key: the key the emulator accepts.
    :param airflow_extra_env: more environment for every Airflow component (read by DAG files).
    """

    log_dir: Path
    home: Path
    dags_folder: Path
    api_key: str
    airflow_extra_env: dict[str, str] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    emulator_url: str = ""
    airflow_url: str = ""
    _env: dict[str, str] = field(default_factory=dict)

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Component:
        log = self.log_dir / f"{name}.log"
        handle = log.open("ab")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=self.home,
                start_new_session=True,
            )
        finally:
            handle.close()
        component = Component(name, popen, log)
        self.components.append(component)
        print(f"  started {name} (pid {popen.pid}), log {log}", flush=True)
        return component

    def stop(self) -> None:
        """Stop every started process group: SIGTERM, then SIGKILL for what is left after a grace."""
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

    # -- emulator --------------------------------------------------------------------------------

    def start_emulator(self, cancel_delay: float = 2.0) -> None:
        """Start the emulator on a free loopback port and wait until its admin API answers."""
        port_file = self.home / "emulator.port"
        port_file.unlink(missing_ok=True)
        self._spawn(
            "emulator",
            [
                str(VENV_BIN / "dropbox-sign-emulator"),
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--cancel-delay",
                str(cancel_delay),
                "--api-key",
                self.api_key,
            ],
        )

        def port() -> int | None:
            text = port_file.read_text(encoding="utf-8").strip() if port_file.exists() else ""
            return int(text) if text else None

        self.emulator_url = f"http://127.0.0.1:{self.wait_for('the emulator port file', port, 30, 0.1)}"
        self.wait_for("the emulator", lambda: self.admin("GET", "health"), 30, 0.1)

    @property
    def emulator_base_url(self) -> str:
        """The API base a client uses, like ``https://api.hellosign.com/v3``."""
        return f"{self.emulator_url}/v3"

    def admin(self, method: str, path: str, payload: Any = None) -> Any:
        """Call the emulator's admin API (``/_emulator/<path>``) and return the JSON answer."""
        response = requests.request(method, f"{self.emulator_url}/_emulator/{path}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json()

    # -- Airflow ---------------------------------------------------------------------------------

    def airflow_env(self) -> dict[str, str]:
        """The environment every Airflow process shares (one home, one set of secrets)."""
        if self._env:
            return self._env
        port = free_port()
        self.airflow_url = f"http://127.0.0.1:{port}"
        env = {
            key: value
            for key, value in os.environ.items()
            # A caller's own Airflow settings must not leak into the throw-away deployment.
            if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
        }
        env.update(
            {
                # `airflow` spawns `airflow ...` children (and task runners): they must be this venv's.
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "VIRTUAL_ENV": str(VENV_BIN.parent),
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": self.airflow_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                # Every component signs or checks the same tokens: one secret for all of them.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_dir / "tasks"),
                # The scheduler and triggerer serve logs on fixed ports by default (8793, 8794): on a
                # shared machine another deployment may hold them.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            }
        )
        env.update(self.airflow_extra_env)
        self._env = env
        return env

    def start_airflow(self) -> None:
        """Migrate the database, start the four components and wait until every one is healthy."""
        env = self.airflow_env()
        airflow = str(VENV_BIN / "airflow")
        migrate = self._spawn("db-migrate", [airflow, "db", "migrate"], env)
        status = migrate.popen.wait(timeout=180)
        # Done: from here on check_alive() watches only the long-running components.
        self.components.remove(migrate)
        if status != 0:
            raise StackError(f"airflow db migrate failed; end of {migrate.log}:\n{tail(migrate.log)}")
        self._spawn("api-server", [airflow, "api-server"], env)
        self._spawn("scheduler", [airflow, "scheduler"], env)
        self._spawn("dag-processor", [airflow, "dag-processor"], env)
        self._spawn("triggerer", [airflow, "triggerer"], env)
        self.wait_for("every Airflow component to be healthy", self._healthy, 240, 1.0)

    def _healthy(self) -> dict[str, Any] | None:
        response = requests.get(f"{self.airflow_url}/api/v2/monitor/health", timeout=5)
        if response.status_code != 200:
            return None
        health = response.json()
        statuses = {name: (part or {}).get("status") for name, part in health.items()}
        return health if statuses and all(status == "healthy" for status in statuses.values()) else None

    def api_response(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """
        Call Airflow's public REST API (``/api/v2/<path>``); the all-admins setting needs no token.

        A GET, PUT or PATCH is repeated for up to :data:`API_PATIENCE` seconds while the server does
        not answer or answers 5xx: on a busy 2-core machine the SQLite-backed server stalls now and
        then, and a write that met "database is locked" is rolled back. Those three are idempotent
        (here a PATCH sets a field); a POST is sent once.
        """
        url = f"{self.airflow_url}/api/v2/{path}"
        deadline = time.monotonic() + (API_PATIENCE if method in ("GET", "PUT", "PATCH") else 0)
        while True:
            try:
                response = requests.request(method, url, timeout=API_TIMEOUT, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if time.monotonic() >= deadline:
                    raise
            else:
                if response.status_code < 500 or time.monotonic() >= deadline:
                    return response
            self.check_alive()
            time.sleep(1)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call Airflow's public REST API (``/api/v2/<path>``) and return the JSON answer."""
        response = self.api_response(method, path, **kwargs)
        if response.status_code >= 400:
            raise StackError(
                f"{method} /api/v2/{path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def dump_json(path: Path, value: Any) -> None:
    """Write a JSON artefact next to the screenshots."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
