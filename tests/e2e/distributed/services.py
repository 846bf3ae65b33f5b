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
from pathlib import Path
from typing import Any

from ..harness.airflow import AIRFLOW, Airflow
from ..harness.emulator import Emulator
from ..harness.processes import Processes, StackError, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
#: Components that call Dropbox Sign, each through its own metered port; ``other`` is for the rest.
API_CALLERS = (*WORKERS, *TRIGGERERS, "other")
#: The confirmations' fallback poll, in seconds.
POKE_INTERVAL = 10.0
#: The pool of the clean-up's API tasks; the run creates it before the DAG runs.
POOL = "dropbox_sign_api"
COMPONENTS = {
    "api-server": [AIRFLOW, "api-server"],
    "scheduler": [AIRFLOW, "scheduler"],
    "dag-processor": [AIRFLOW, "dag-processor"],
    **{name: [AIRFLOW, "triggerer"] for name in TRIGGERERS},
    **{
        name: [
            AIRFLOW,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
        ]
        for name in WORKERS
    },
}


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


def succeeds(argv: list[str]) -> bool | None:
    """Whether ``argv`` exits 0 (``None`` when not, for waiting on it)."""
    return True if subprocess.run(argv, capture_output=True, check=False).returncode == 0 else None


#: The API app of an OAuth run (its secret is the run's random API key), and its tokens' lifetime.
OAUTH_CLIENT_ID = "e2e-distributed-app"
OAUTH_TOKEN_LIFETIME = 60


class Services:
    """
    PostgreSQL, Redis, and the emulator behind the meter.

    :param rate_limit: the emulator's requests per 60-second window.
    :param oauth: every component's connection is an API app's, whose access tokens live
        :data:`OAUTH_TOKEN_LIFETIME` seconds, rotated at each refresh, the replaced one refused.
    """

    def __init__(
        self, processes: Processes, emulator: Emulator, log_dir: Path, rate_limit: int, oauth: bool = False
    ) -> None:
        self.processes = processes
        self.emulator = emulator
        self.log_dir = log_dir
        self.rate_limit = rate_limit
        self.oauth = oauth
        #: the refresh token the API app was granted (``oauth`` only)
        self.refresh_token = ""
        self.pg_port = 0
        self.redis_port = 0
        self.meter_ports: dict[str, int] = {}
        self._scratch: list[Path] = []

    def ports(self) -> list[int]:
        """The ports the services listen on, once started."""
        started = [self.pg_port, self.redis_port, *self.meter_ports.values()]
        return [port for port in started if port]

    def remove_scratch(self) -> None:
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()

    def start_postgres(self) -> None:
        data = owned_tempdir("postgres", "e2e-dist-pg-")
        self._scratch.append(data)
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
        self.processes.spawn(
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
            # PostgreSQL's SIGTERM is a smart shutdown that waits for every client: SIGINT is the
            # fast one, which ends the clients' backends at once.
            first_signal=signal.SIGINT,
        )
        ready = [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)]
        self.processes.wait_for("PostgreSQL", lambda: succeeds(ready), 60, 0.3)
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
        self._scratch.append(data)
        self.redis_port = free_port()
        self.processes.spawn(
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

        self.processes.wait_for("Redis", ready, 30, 0.3)

    def start_emulator(self) -> None:
        """The emulator at the scaled-down rate limit, and the meter in front of it."""
        oauth = (
            [
                "--oauth-app",
                f"{OAUTH_CLIENT_ID}:{self.emulator.api_key}",
                "--token-lifetime",
                str(OAUTH_TOKEN_LIFETIME),
                "--rotate-refresh-tokens",
                "--refuse-superseded-refresh-tokens",
            ]
            if self.oauth
            else []
        )
        self.emulator.start(2.0, "--rate-limit", str(self.rate_limit), "--window-seconds", "60", *oauth)
        if self.oauth:
            granted = self.emulator.admin("POST", "oauth/grants", {"client_id": OAUTH_CLIENT_ID})
            self.refresh_token = granted["refresh_token"]
        ports_file = self.emulator.port_file.with_name("meter.ports")
        self.processes.spawn(
            "meter",
            [
                sys.executable,
                str(Path(__file__).with_name("meter.py")),
                "--upstream",
                self.emulator.url,
                "--ports-file",
                str(ports_file),
                "--log",
                str(self.meter_log),
                *API_CALLERS,
            ],
        )
        self.meter_ports = self.processes.wait_for_file("the meter", ports_file, json.loads)

    @property
    def meter_log(self) -> Path:
        return self.log_dir / "meter.jsonl"


class CeleryAirflow(Airflow):
    """
    Airflow on PostgreSQL and Redis with CeleryExecutor; each component calls Dropbox Sign through
    its own port of the meter.

    :param share: ``max_requests_per_minute`` of the connection every component uses (``None``:
        the provider's default, so only the headers coordinate the processes).
    """

    def __init__(self, services: Services, dags_folder: Path, share: int | None) -> None:
        processes = services.processes
        # The home is the processes' working directory; task logs go next to theirs.
        super().__init__(processes, processes.cwd, dags_folder, services.log_dir)
        self.services = services
        self.share = share

    def configure(self) -> dict[str, str]:
        env = super().configure()
        database = f"postgresql+psycopg2://airflow@127.0.0.1:{self.services.pg_port}/airflow"
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.services.redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                "AIRFLOW__CORE__PARALLELISM": "8",
                # A task whose worker died is failed (and retried) after this, not after 5 minutes.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                # The surviving triggerer takes over a dead one's triggers once this has passed.
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                "AIRFLOW__SCHEDULER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
                # The provider's [dropbox_sign] settings, as the deployment sets them on every
                # component: the clean-up is armed (the workers read it when a task runs), the
                # confirmations' fallback poll, and the API tasks' pool (read when a DAG is parsed).
                "AIRFLOW__DROPBOX_SIGN__ARMED": "True",
                "AIRFLOW__DROPBOX_SIGN__POKE_INTERVAL": str(POKE_INTERVAL),
                "AIRFLOW__DROPBOX_SIGN__POOL": POOL,
            }
        )
        return env

    def component_env(self, name: str) -> dict[str, str]:
        """The shared environment, plus this component's own metered connection and log ports."""
        env = dict(self.env())
        extra: dict[str, Any] = {}
        if self.share is not None:
            extra["max_requests_per_minute"] = self.share
        meter_ports = self.services.meter_ports
        caller = name if name in meter_ports else "other"
        conn: dict[str, Any] = {
            "conn_type": "dropbox_sign",
            "host": f"http://127.0.0.1:{meter_ports[caller]}",
            "password": self.services.emulator.api_key,
        }
        if self.services.oauth:
            # Refreshes go to the emulator itself: the meter counts the API's requests only.
            del conn["password"]
            extra.update(
                client_id=OAUTH_CLIENT_ID,
                client_secret=self.services.emulator.api_key,
                refresh_token=self.services.refresh_token,
                oauth_refresh_url=f"{self.services.emulator.url}/oauth/token",
            )
        env["AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT"] = json.dumps({**conn, "extra": extra})
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        return env
