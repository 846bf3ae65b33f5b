"""
One end-to-end run from start to verdict: a fresh output folder, a throw-away Airflow home, a
watchdog, the timed steps, and ``summary.json``; whatever happens, every started process is
stopped before the run says how it went.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from .steps import Failures, Timer, dump_json


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind through the ``finally`` blocks that stop the processes."""


class Run:
    """
    :param name: what the verdict line calls the run (``E2E PASSED ...``).
    :param out: the artefacts' folder, emptied first.
    :param timeout_s: past this something hangs, and the run must still clean up.
    :param home_prefix: of the throw-away ``AIRFLOW_HOME``, removed when the run passes and kept
        for inspection when it fails.
    """

    def __init__(self, name: str, out: Path, timeout_s: int, home_prefix: str) -> None:
        self.name = name
        self.out = out.resolve()
        self.timeout_s = timeout_s
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        self.home = Path(tempfile.mkdtemp(prefix=home_prefix))
        self.timer = Timer()
        self.step = self.timer.step
        self.failures = Failures()
        self.summary: dict[str, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            raise TimeoutError(f"the run took longer than {self.timeout_s} s")
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def guarded(self, stop: Callable[[], None]) -> Iterator[None]:
        """
        The run's steps go in the ``with`` block: its first exception (a failed check, a timeout,
        Ctrl-C, SIGTERM) is a failure; then ``stop`` is called, and ``summary.json`` written.
        """
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
            signal.signal(signum, self._on_signal)
        signal.alarm(self.timeout_s)
        try:
            yield
        except (Exception, KeyboardInterrupt) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            print(f"\n{self.name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            # Cleanup must finish even if the user presses Ctrl-C again or the watchdog fires now.
            signal.alarm(0)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            with self.step("stop every started process"):
                stop()
            if not self.failures:
                shutil.rmtree(self.home, ignore_errors=True)
            self.summary.update(
                ok=not self.failures,
                failures=self.failures,
                seconds=self.timer.now(),
                steps=self.timer.steps,
            )
            dump_json(self.out / "summary.json", self.summary)

    def verdict(self, passed: str) -> int:
        """Say how the run went (``passed``: what a pass means); its exit status."""
        if not self.failures:
            print(f"\n{self.name} PASSED in {self.timer.now()} s: {passed}; evidence in {self.out}")
            return 0
        print(f"\n{self.name} FAILED in {self.timer.now()} s; evidence in {self.out}", file=sys.stderr)
        for failure in self.failures:
            print(f"  - {failure}", file=sys.stderr)
        print(f"  Airflow home kept for inspection: {self.home}", file=sys.stderr)
        return 1
