"""
The emulator's one clock.

Every module of the emulator reads time through :func:`now` and :func:`monotonic`, which look up the
package's ``time`` attribute at each call. A test replaces that one attribute,
``monkeypatch.setattr(emulator_module, "time", FakeClock())``, and every part of the emulator (rate
windows, ``created_at``, cancellations, events and their delivery) follows it.
"""

from __future__ import annotations

import sys
from typing import Any

# The package (``dropbox_sign_provider.testing.emulator``), looked up at call time: it imports this
# module while it is being initialised, and a test may swap its ``time`` at any moment.
_PACKAGE = __name__.rpartition(".")[0]


def _time() -> Any:
    return sys.modules[_PACKAGE].time


def now() -> float:
    """Epoch seconds, for values the API shows: ``created_at``, rate-limit windows, ``event_time``."""
    return float(_time().time())


def monotonic() -> float:
    """Seconds on a clock that never goes back, for durations: ``cancel_delay``, held events."""
    return float(_time().monotonic())
