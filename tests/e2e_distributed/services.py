"""
The distributed deployment's processes: PostgreSQL and Redis from Debian's packages, run as their
own unprivileged users in throw-away directories on free ports; the emulator at a scaled-down rate
limit behind the metering pass-through; and Airflow with CeleryExecutor (api-server, scheduler,
dag-processor, two Celery workers, two triggerers), each its own process in its own session.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import contextlib

from stack import VENV_BIN, Component, Stack, StackError, free_port, tail

PG_BIN = Path("/usr/lib/postgresql/15/bin")
WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
#: Components that call Dropbox Sign, each through its own metered port; ``other`` is for the rest.
API_CALLERS = (*WORKERS, *TRIGGERERS, "other")


def ensure_debian_packages() -> None:
    """Install PostgreSQL and Redis with apt-get when they are missing."""
    missing = [
        package
        for package, binary in (
            ("postgresql", PG_BIN / "postgres"),
            ("redis-server", Path("/usr/bin/redis-server")),
        )
        if not binary.exists()
    ]
    if not missing:
        return
    print(f"  installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def as_user(user: str, argv: list[str]) -> list[str]:
    """``argv`` run as ``user`` (setpriv execs in place: no extra parent between us and it)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]


def owned_tempdir(user: str, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


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


def kill_session(leader: int) -> list[int]:
    """SIGKILL every process of the session ``leader`` started; return their pids."""
    pids = sessions_of({leader})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@dataclass
class DistributedStack(Stack):
    """
    :param rate_limit: the emulator's requests per 60-second window.
    :param share: ``max_requests_per_minute`` of the connection every component uses (``None``:
        the provider's default, so only the headers coordinate the processes).
    """

    rate_limit: int = 100
    share: int | None = None
    poke_interval: float = 10.0
    pg_port: int = 0
    redis_port: int = 0
    meter_ports: dict[str, int] = field(default_factory=dict)
    scratch: list[Path] = field(default_factory=list)
    started_sessions: set[int] = field(default_factory=set)

    def _spawn(self, name: str, argv: list[str], env: Any = None) -> Component:
        component = super()._spawn(name, argv, env)
        self.started_sessions.add(component.popen.pid)
        return component

    def stop(self) -> None:
        """Stop every component by process group, then sweep what escaped into their sessions."""
        for component in self.components:
            # PostgreSQL's SIGTERM is a smart shutdown that waits for every client: SIGINT is the
            # fast one, which ends the clients' backends at once.
            if component.name == "postgres" and component.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(component.popen.pid, signal.SIGINT)
        super().stop()
        for pid in sessions_of(self.started_sessions):
            print(f"  pid {pid} outlived its component; killing it", flush=True)
            kill_session_member(pid)
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)
        self.scratch.clear()

    def stop_component(self, name: str, signum: int = signal.SIGTERM) -> None:
        for component in self.components:
            if component.name == name and component.alive():
                os.killpg(component.popen.pid, signum)
                component.popen.wait(timeout=60)

    # -- PostgreSQL and Redis --------------------------------------------------------------------

    def start_postgres(self) -> None:
        data = owned_tempdir("postgres", "e2e-dist-pg-")
        self.scratch.append(data)
        init = subprocess.run(
            as_user(
                "postgres",
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data / "db"),
                    "-U",
                    "airflow",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
            cwd=data,
            capture_output=True,
            text=True,
            check=False,
        )
        if init.returncode != 0:
            raise StackError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        self.pg_port = free_port()
        self._spawn(
            "postgres",
            as_user(
                "postgres",
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(data / "db"),
                    "-p",
                    str(self.pg_port),
                    "-k",
                    str(data),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=off",
                ],
            ),
        )

        def ready() -> bool | None:
            probe = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)],
                capture_output=True,
                check=False,
            )
            return True if probe.returncode == 0 else None

        self.wait_for("PostgreSQL", ready, 60, 0.3)
        created = subprocess.run(
            ["/usr/bin/createdb", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow", "airflow"],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            raise StackError(f"createdb failed: {created.stderr}")

    def start_redis(self) -> None:
        data = owned_tempdir("redis", "e2e-dist-redis-")
        self.scratch.append(data)
        self.redis_port = free_port()
        self._spawn(
            "redis",
            as_user(
                "redis",
                [
                    "/usr/bin/redis-server",
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(data),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
            ),
        )

        def ready() -> bool | None:
            probe = subprocess.run(
                ["/usr/bin/redis-cli", "-p", str(self.redis_port), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            return True if probe.stdout.strip() == "PONG" else None

        self.wait_for("Redis", ready, 30, 0.3)

    # -- emulator and meter ----------------------------------------------------------------------

    def start_emulator(self, cancel_delay: float = 2.0) -> None:
        port_file = self.home / "emulator.port"
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
                "--rate-limit",
                str(self.rate_limit),
                "--window-seconds",
                "60",
            ],
        )

        def port() -> int | None:
            text = port_file.read_text(encoding="utf-8").strip() if port_file.exists() else ""
            return int(text) if text else None

        self.emulator_url = f"http://127.0.0.1:{self.wait_for('the emulator port file', port, 30, 0.1)}"
        self.wait_for("the emulator", lambda: self.admin("GET", "health"), 30, 0.1)
        ports_file = self.home / "meter.ports"
        self._spawn(
            "meter",
            [
                sys.executable,
                str(Path(__file__).with_name("meter.py")),
                "--upstream",
                self.emulator_url,
                "--ports-file",
                str(ports_file),
                "--log",
                str(self.log_dir / "meter.jsonl"),
                *API_CALLERS,
            ],
        )

        def ports() -> dict[str, int] | None:
            text = ports_file.read_text(encoding="utf-8") if ports_file.exists() else ""
            return json.loads(text) if text else None

        self.meter_ports = self.wait_for("the meter", ports, 30, 0.1)

    # -- Airflow ---------------------------------------------------------------------------------

    def airflow_env(self) -> dict[str, str]:
        if self._env:
            return self._env
        env = super().airflow_env()
        database = f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                "AIRFLOW__CORE__PARALLELISM": "8",
                # A task whose worker died is failed (and retried) after this, not after 5 minutes.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                # The surviving triggerer takes over a dead one's triggers once this has passed.
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                "AIRFLOW__SCHEDULER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
                "DROPBOX_SIGN_CONFIRM_POKE_INTERVAL": str(self.poke_interval),
                "DROPBOX_SIGN_POOL": "dropbox_sign_api",
            }
        )
        return env

    def component_env(self, name: str) -> dict[str, str]:
        """The shared environment, plus this component's own metered connection and log port."""
        env = dict(self.airflow_env())
        extra: dict[str, Any] = {}
        if self.share is not None:
            extra["max_requests_per_minute"] = self.share
        caller = name if name in self.meter_ports else "other"
        env["AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT"] = json.dumps(
            {
                "conn_type": "dropbox_sign",
                "host": f"http://127.0.0.1:{self.meter_ports[caller]}",
                "password": self.api_key,
                "extra": extra,
            }
        )
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        return env

    def start_airflow(self) -> None:
        airflow = str(VENV_BIN / "airflow")
        migrate = self._spawn("db-migrate", [airflow, "db", "migrate"], self.component_env("other"))
        status = migrate.popen.wait(timeout=300)
        self.components.remove(migrate)
        if status != 0:
            raise StackError(f"airflow db migrate failed; end of {migrate.log}:\n{tail(migrate.log)}")
        for name, argv in (
            ("api-server", [airflow, "api-server"]),
            ("scheduler", [airflow, "scheduler"]),
            ("dag-processor", [airflow, "dag-processor"]),
            *((name, [airflow, "triggerer"]) for name in TRIGGERERS),
            *(
                (
                    name,
                    [
                        airflow,
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"{name}@%h",
                        "--concurrency",
                        "2",
                        "--without-gossip",
                        "--without-mingle",
                    ],
                )
                for name in WORKERS
            ),
        ):
            self._spawn(name, argv, self.component_env(name))
        self.wait_for("every Airflow component to be healthy", self._healthy, 300, 1.0)

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def drop(self, name: str) -> None:
        """Forget a component that was killed on purpose, so check_alive() stops watching it."""
        component = self.component(name)
        component.popen.wait(timeout=30)
        self.components.remove(component)
        self.killed.append(component)

    killed: list[Component] = field(default_factory=list)


def kill_session_member(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
