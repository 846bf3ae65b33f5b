"""
What every scenario shares: the emulator, the measured client processes, and the arithmetic.

The emulator runs in the runner's process, in its own thread and event loop. Every measured client
(this provider's code, or the baseline) runs in a fresh subprocess, so its CPU time and memory are
its own and no client inherits another's imports, sessions or rate-limit budget. The runner itself
only waits while a client runs; its one busy moment, queueing the cancellations of
``confirm_at_scale``, happens before the measured phase starts.

A client and the runner talk through three channels: a JSON spec file in, a ``READY`` line on a pipe
once the client's imports and warm-up are done, a ``GO <unix time>`` line on the client's stdin, and
a JSON result file out. The client's own output (Airflow's logging) goes to a log file next to the
results, so it never mixes with the table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from dropbox_sign_provider.testing.emulator import DropboxSignEmulator, LoggedRequest

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
#: Seconds a client gets to import Airflow and warm up before the runner gives up on it.
READY_TIMEOUT = 180.0


# --- the emulator ---------------------------------------------------------------------------------


def start_emulator(
    limit_per_window: int, window_s: float, cancel_delay: float = 1.0, callback_url: str | None = None
) -> DropboxSignEmulator:
    """
    A fresh emulator on loopback accepting :data:`API_KEY`, with the scenario's rate limit.

    :param callback_url: where it posts its signed events, or ``None`` for none.
    """
    return DropboxSignEmulator(
        api_keys=(API_KEY,),
        access_tokens=(),
        rate_limit=limit_per_window,
        window_seconds=window_s,
        cancel_delay=cancel_delay,
        callback_url=callback_url,
    ).start()


def dropbox_sign_connection(host: str, limit_per_window: int, window_s: float) -> str:
    """
    A ``dropbox_sign`` connection to ``host`` (the emulator's URL), its client-side cap scaled like
    the window.

    The API's limit is 100 per minute and the provider's default cap says so; a scenario that scales
    the window down to seconds scales the cap up by the same factor, so both describe one rate.
    """
    per_minute = math.ceil(limit_per_window * 60.0 / window_s)
    return json.dumps(
        {
            "conn_type": "dropbox_sign",
            "host": host,
            "password": API_KEY,
            "extra": {"max_requests_per_minute": per_minute},
        }
    )


def http_connection(emulator: DropboxSignEmulator) -> str:
    """An ``http`` connection to the emulator as the HTTP provider expects it: the API key as login."""
    return json.dumps(
        {
            "conn_type": "http",
            "host": emulator.host,
            "port": emulator.port,
            "schema": "http",
            "login": API_KEY,
        }
    )


def create_requests(emulator: DropboxSignEmulator, n: int) -> list[str]:
    """Create ``n`` incomplete signature requests; return their ids."""
    return [emulator.create_signature_request(title="Benchmark")["signature_request_id"] for _ in range(n)]


def save_log(log: Iterable[LoggedRequest], path: Path) -> None:
    """Keep what the emulator saw, one ``[time, status, method, path]`` per request, for a closer look."""
    path.write_text(json.dumps([[entry.time, entry.status, entry.method, entry.path] for entry in log]))


def window_counts(log: Iterable[LoggedRequest], window_s: float) -> Counter[int]:
    """Requests the emulator saw per rate-limit window (windows are aligned on the epoch clock)."""
    return Counter(math.floor(entry.time / window_s) for entry in log)


# --- measured clients -----------------------------------------------------------------------------


def client_env(
    airflow_home: Path, connections: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """
    The environment of a client process: a throw-away Airflow home and the scenario's connections.

    :param extra: more variables, set last (a scenario's metadata database, say).
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The trigger and the operator log one line per id; the benchmark measures the calls,
            # not the log handler, and the baseline logs nothing.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
    )
    for conn_id, value in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = value
    env.update(extra or {})
    return env


class ClientProcess:
    """
    One measured client: ``python -m <module> --spec <file>`` in a fresh process.

    :param module: the scenario module whose ``client_main`` runs in the process.
    :param spec: what the client needs (ids, sizes, side); written to a JSON file.
    :param connections: conn id -> ``AIRFLOW_CONN_*`` value.
    :param workdir: where the spec, result and log files go.
    :param extra_env: more environment for the process (see :func:`client_env`).
    """

    def __init__(
        self,
        module: str,
        spec: Mapping[str, Any],
        connections: Mapping[str, str],
        workdir: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        name = f"{module.rsplit('.', 1)[-1]}-{spec['side']}"
        self.spec_path = workdir / f"{name}.spec.json"
        self.result_path = workdir / f"{name}.result.json"
        self.log_path = workdir / f"{name}.log"
        self.result_path.unlink(missing_ok=True)
        self.spec_path.write_text(json.dumps({**spec, "result_path": str(self.result_path)}))
        ready_read, ready_write = os.pipe()
        self._ready = os.fdopen(ready_read, "r")
        self._log = self.log_path.open("w")
        self._home = tempfile.TemporaryDirectory(prefix="bench-airflow-")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--spec", str(self.spec_path), "--ready-fd", str(ready_write)],
            cwd=REPO,
            env=client_env(Path(self._home.name), connections, extra_env),
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=(ready_write,),
            text=True,
        )
        os.close(ready_write)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until the client has imported everything and warmed up."""
        readable, _, _ = select.select([self._ready], [], [], timeout)
        line = self._ready.readline() if readable else ""
        if line.strip() != "READY":
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"client did not get ready in {timeout:g} s; see {self.log_path}")

    def go(self, start_at: float) -> None:
        """Tell the client to start its measured phase at ``start_at`` (Unix time)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"GO {start_at!r}\n")
        self.process.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the client to finish and return what it measured."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"client still running after {timeout:g} s; see {self.log_path}") from None
        finally:
            self._close()
        if self.process.returncode != 0 or not self.result_path.exists():
            raise RuntimeError(f"client failed (exit status {self.process.returncode}); see {self.log_path}")
        return dict(json.loads(self.result_path.read_text()))

    def _close(self) -> None:
        for handle in (self._ready, self._log, self.process.stdin):
            if handle is not None:
                handle.close()
        self._home.cleanup()


def client_main(run: Callable[[dict[str, Any], Callable[[], float]], dict[str, Any]]) -> None:
    """
    The entry point of a client process.

    :param run: called with the spec and a ``ready()`` function; ``ready()`` reports the client
        ready and returns the start time the runner then sends. ``run`` returns the measurements.
    """
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())

    def ready() -> float:
        with os.fdopen(args.ready_fd, "w") as channel:
            channel.write("READY\n")
        word, _, start_at = sys.stdin.readline().partition(" ")
        if word != "GO":
            raise SystemExit("the runner went away before the start")
        return float(start_at)

    result = run(spec, ready)
    Path(spec["result_path"]).write_text(json.dumps(result))


def rss_kb() -> int:
    """This process's resident set size, in KiB (Linux)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds() -> float:
    """CPU time of this process, user and system, all threads."""
    return time.process_time()


# --- arithmetic -----------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); ``inf`` values count as the slowest."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def finite_or_none(value: float, digits: int = 3) -> float | None:
    """A JSON-safe number: ``None`` for ``inf`` and ``nan``."""
    return round(value, digits) if math.isfinite(value) else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 3)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    memory_kb = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "memory_mb": memory_kb // 1024 if memory_kb else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None
