"""
``import``: what importing the operator and sensor modules adds on top of ``airflow.sdk``.

Each sample is a fresh ``python -X importtime -c "import airflow.sdk; import <modules>"``; the added
time is the sum of the ``self`` times of every module imported after ``airflow.sdk`` finished, so
whatever ``airflow.sdk`` itself pulls in is not counted. One untimed run of both sides first writes
the bytecode caches and warms the file cache; then the sides alternate, so a change in the machine's
load during the scenario touches both alike. The result is the median of the timed runs.

``-X importtime`` measures wall-clock time, which on a busy machine includes waiting for a CPU; the
CPU time of the same imports (``time.process_time()`` around them, in the same process) is recorded
beside it as a check that is less sensitive to other load.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, client_env

OURS = (
    "dropbox_sign_provider.operators.signature_request",
    "dropbox_sign_provider.sensors.signature_request",
)
HTTP_PROVIDER = ("airflow.providers.http.operators.http",)
BASE = "airflow.sdk"


def run(runs: int) -> dict[str, Any]:
    """
    The scenario's JSON section.

    :param runs: timed samples per side; the median is reported.
    """
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "http_provider": []}
    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as home:
        env = client_env(Path(home), {})
        _sample((*OURS, *HTTP_PROVIDER), env)
        for _ in range(runs):
            samples["ours"].append(_sample(OURS, env))
            samples["http_provider"].append(_sample(HTTP_PROVIDER, env))
    section: dict[str, Any] = {}
    for side, taken in samples.items():
        section[f"{side}_ms"] = round(statistics.median(wall for wall, _ in taken), 1)
    for side, taken in samples.items():
        section[f"{side}_cpu_ms"] = round(statistics.median(cpu for _, cpu in taken), 1)
        section[f"{side}_samples_ms"] = [round(wall, 1) for wall, _ in taken]
    section.update({"ours_modules": list(OURS), "http_provider_modules": list(HTTP_PROVIDER), "runs": runs})
    return section


def _sample(modules: tuple[str, ...], env: dict[str, str]) -> tuple[float, float]:
    """One fresh interpreter: (added ``-X importtime`` ms, added CPU ms)."""
    code = "; ".join(
        [f"import {BASE}", "import time", "started = time.process_time()"]
        + [f"import {module}" for module in modules]
        + ["print(time.process_time() - started)"]
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return added_after(done.stderr, BASE) / 1000.0, float(done.stdout.strip().splitlines()[-1]) * 1000.0


def added_after(importtime: str, base: str) -> int:
    """
    Microseconds of imports that finished after the top-level import of ``base``.

    :param importtime: the stderr of ``python -X importtime``, whose lines read
        ``import time: <self us> | <cumulative us> | <indent><module>``, children before parents.
    :param base: the module whose import, and everything it pulled in, is not counted.
    :raises ValueError: when ``base`` was not imported at the top level.
    """
    total, after_base = 0, False
    for line in importtime.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        name = fields[2]
        if after_base:
            total += int(fields[0])
        # Top level: one space after the bar and no indentation.
        elif name.strip() == base and name[1:2] != " ":
            after_base = True
    if not after_base:
        raise ValueError(f"{base} does not appear at the top level of the import trace")
    return total
