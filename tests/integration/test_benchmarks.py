"""The benchmark command still runs: a small bulk cancellation through the operator, as `make bench` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_bulk_cancel_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        # Its own work folder: the suites of several Airflow versions may run side by side.
        [
            *(sys.executable, "-m", "benchmarks.run", "--quick", "--only", "bulk_cancel"),
            *("--out", str(out), "--workdir", str(tmp_path / "work")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())["bulk_cancel"]
    assert result["ours"]["cancelled"] == result["n"]  # every id was cancelled
