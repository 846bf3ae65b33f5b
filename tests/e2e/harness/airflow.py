"""
An Airflow deployment in a throw-away ``AIRFLOW_HOME`` (api-server, scheduler, dag-processor,
triggerer; LocalExecutor; SQLite unless told otherwise), and a client of its public REST API.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests

from . import VENV_BIN
from .processes import Processes, StackError, free_port

T = TypeVar("T")

#: Seconds one REST call may take; and how long a GET is retried while the server stalls.
API_TIMEOUT = 30
API_PATIENCE = 90
TERMINAL_RUN_STATES = ("success", "failed")
AIRFLOW = str(VENV_BIN / "airflow")
#: The LocalExecutor deployment's long-running components: each its own ``airflow`` command.
COMPONENTS = {name: [AIRFLOW, name] for name in ("api-server", "scheduler", "dag-processor", "triggerer")}


class Client:
    """
    One caller of Airflow's public REST API (``/api/v2``).

    :param url: the API server's root, e.g. ``http://127.0.0.1:8080``.
    :param processes: watched while the client waits or retries: a dead component fails the wait.
    :param headers: sent with every call (a user's token; none where all are admins).
    :param name: who calls, for error messages.
    """

    def __init__(
        self, url: str, processes: Processes, headers: Mapping[str, str] | None = None, name: str = ""
    ) -> None:
        self.url = url
        self.processes = processes
        self.headers = dict(headers or {})
        self.name = name

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
        return self.processes.wait_for(what, probe, timeout, interval)

    def wait_until_parked(self, dag_id: str, run_id: str, task_id: str, timeout: float = 120) -> None:
        """
        Wait until the scheduler has handled the executor's report of the workload that parked
        ``task_id`` to wait for a person. Airflow 3.3.2's scheduler fails a task answered before that
        ("task state changed externally"), which takes it up to several seconds on a busy machine;
        no person answers that fast, so a test that answers must wait for it too.
        """
        log = self.processes.log_dir / "scheduler.log"
        reported = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id},"

        def probe() -> bool | None:
            return (reported in log.read_text(errors="replace")) or None

        self.wait_for(f"the scheduler to see {task_id} of {run_id} wait for a person", probe, timeout)

    def response(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """
        Call ``/api/v2/<path>`` and return the response, whatever its status.

        A GET, PUT or PATCH is repeated for up to :data:`API_PATIENCE` seconds while the server does
        not answer or answers 5xx: on a busy 2-core machine the SQLite-backed server stalls now and
        then, and a write that met "database is locked" is rolled back. Those three are idempotent
        (here a PATCH sets a field); a POST is sent once.
        """
        url = f"{self.url}/api/v2/{path}"
        headers = {**self.headers, **kwargs.pop("headers", {})}
        deadline = time.monotonic() + (API_PATIENCE if method in ("GET", "PUT", "PATCH") else 0)
        while True:
            try:
                response = requests.request(method, url, headers=headers, timeout=API_TIMEOUT, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if time.monotonic() >= deadline:
                    raise
            else:
                if response.status_code < 500 or time.monotonic() >= deadline:
                    return response
            self.processes.check_alive()
            time.sleep(1)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/api/v2/<path>`` and return the JSON answer; raise on a 4xx or 5xx."""
        response = self.response(method, path, **kwargs)
        if response.status_code >= 400:
            who = f"{self.name}: " if self.name else ""
            raise StackError(
                f"{who}{method} /api/v2/{path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    # -- DAGs and runs ----------------------------------------------------------------------------

    @staticmethod
    def run_path(dag_id: str, run_id: str, task_id: str | None = None) -> str:
        path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        return f"{path}/taskInstances/{task_id}" if task_id else path

    def wait_for_dag(self, dag_id: str, timeout: float) -> dict[str, Any]:
        """The DAG once the dag-processor has serialized it; fails fast on its import error."""

        def probe() -> dict[str, Any] | None:
            for error in self.api("GET", "importErrors")["import_errors"]:
                if Path(error["filename"]).name == f"{dag_id}.py":
                    raise StackError(f"{error['filename']} does not import:\n{error['stack_trace']}")
            response = self.response("GET", f"dags/{dag_id}")
            dag: dict[str, Any] | None = response.json() if response.status_code == 200 else None
            return dag

        return self.wait_for(f"the DAG {dag_id} to be parsed", probe, timeout, 1.0)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Trigger a run of ``dag_id`` with ``conf``; its run id."""
        run = self.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("GET", f"dags/{dag_id}/dagRuns")["dag_runs"]
        return found

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"{self.run_path(dag_id, run_id)}/taskInstances"
        found: list[dict[str, Any]] = self.api("GET", path, params={"limit": 100})["task_instances"]
        return found

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout: float
    ) -> str:
        """The task's state once it is one of ``states``."""

        def probe() -> str | None:
            state = self.api("GET", self.run_path(dag_id, run_id, task_id)).get("state")
            return state if state in states else None

        return self.wait_for(f"{task_id} of {run_id} to be {'/'.join(states)}", probe, timeout, 1.0)

    def wait_for_end(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """The run once it has ended, successfully or not."""

        def ended() -> dict[str, Any] | None:
            run: dict[str, Any] = self.api("GET", self.run_path(dag_id, run_id))
            return run if run["state"] in TERMINAL_RUN_STATES else None

        return self.wait_for(f"{dag_id} run {run_id} to end", ended, timeout, 1.0)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom ``key`` (by default its result), deserialized."""
        entry = self.api(
            "GET",
            f"{self.run_path(dag_id, run_id, task_id)}/xcomEntries/{key}",
            params={"deserialize": "true"},
        )
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[dict[str, Any]]:
        """A task try's log as structured events, merged from the worker's and the triggerer's files."""
        answer = self.api(
            "GET",
            f"{self.run_path(dag_id, run_id, task_id)}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content: list[dict[str, Any]] = answer["content"]
        return content


class Airflow(Client):
    """
    Configure, start and stop a deployment; its client has the all-admins setting, so needs no token.

    :param processes: starts, watches and stops the components.
    :param home: the throw-away ``AIRFLOW_HOME`` (configuration, SQLite database).
    :param dags_folder: the DAGs folder Airflow serves.
    :param log_dir: where Airflow's task logs go (``tasks/``).
    :param extra_env: more environment for every component (read by DAG files), applied last.
    """

    def __init__(
        self,
        processes: Processes,
        home: Path,
        dags_folder: Path,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__("", processes)
        self.home = home
        self.dags_folder = dags_folder
        self.log_dir = log_dir
        self.extra_env = dict(extra_env or {})
        self._env: dict[str, str] = {}

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        """The environment every Airflow process shares (one home, one set of secrets)."""
        if not self._env:
            self._env = self.configure()
            self._env.update(self.extra_env)
        return self._env

    def configure(self) -> dict[str, str]:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
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
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": self.url,
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
        return env

    def component_env(self, name: str) -> dict[str, str]:
        """The environment of the component ``name``: the shared one here."""
        return self.env()

    def start(
        self,
        components: Mapping[str, list[str]] = COMPONENTS,
        migrate_timeout: float = 180,
        healthy_timeout: float = 240,
    ) -> None:
        """Migrate the database, start ``components`` and wait until every one is healthy."""
        self.env()
        self.processes.run(
            "db-migrate", [AIRFLOW, "db", "migrate"], self.component_env("db-migrate"), migrate_timeout
        )
        for name, argv in components.items():
            self.processes.spawn(name, argv, self.component_env(name))
        self.wait_for("every Airflow component to be healthy", self._healthy, healthy_timeout, 1.0)

    def restart(
        self,
        env: Mapping[str, str],
        components: Mapping[str, list[str]] = COMPONENTS,
        healthy_timeout: float = 240,
    ) -> None:
        """
        Change the deployment's configuration: stop ``components``, then start them again with
        ``env`` added to every component's environment (Airflow reads its configuration once per
        process), and wait until each one restarted has reported healthy since.
        """
        for name in reversed(list(components)):
            self.processes.terminate(name)
        self.extra_env.update(env)
        self._env.update(env)
        since = time.time()
        for name, argv in components.items():
            self.processes.spawn(name, argv, self.component_env(name))
        self.wait_for(
            "every restarted Airflow component to be healthy",
            lambda: self._healthy(since),
            healthy_timeout,
            1.0,
        )

    def _healthy(self, since: float | None = None) -> dict[str, Any] | None:
        """The health report when every component is healthy (and has beaten since ``since``)."""
        response = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        if response.status_code != 200:
            return None
        health = response.json()
        statuses = {name: (part or {}).get("status") for name, part in health.items()}
        if not statuses or any(status != "healthy" for status in statuses.values()):
            return None
        if since is not None:
            beats = [
                value
                for part in health.values()
                for key, value in (part or {}).items()
                if key.startswith("latest_") and key.endswith("_heartbeat")
            ]
            # A stopped component's last heartbeat stays "healthy" for a while: wait for the new one's.
            if not beats or any(not beat or _epoch(beat) < since for beat in beats):
                return None
        return health


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()
