"""Timed steps, checks and JSON evidence."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Timer:
    """Wall-clock time of each step, printed as it ends and kept for ``summary.json``."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - start, 1)
            print(f"   {name}: {self.steps[name]} s", flush=True)

    def now(self) -> float:
        """Seconds since the run started."""
        return round(time.monotonic() - self.started, 1)


def check(condition: bool, message: str) -> None:
    """Fail the run with ``message`` unless ``condition`` holds (works under ``python -O`` too)."""
    if not condition:
        raise AssertionError(message)


class Failures(list[str]):
    """The failed checks of a run that judges everything before it says whether it passed."""

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.append(message)
            print(f"  FAIL: {message}", flush=True)


def dump_json(path: Path, value: Any) -> None:
    """Write a JSON artefact next to the screenshots and logs."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
