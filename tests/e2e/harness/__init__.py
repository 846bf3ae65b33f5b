"""
What the end-to-end runs share: the run itself (its output folder, throw-away Airflow home,
watchdog, timed steps and ``summary.json``), the processes they start and stop, the Dropbox Sign
emulator, and Airflow with its REST client.

The runners are modules, run from the repository's root: ``python -m tests.e2e.single.run``,
``python -m tests.e2e.single.tampering``, ``python -m tests.e2e.distributed.run``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
#: The virtualenv running the harness: Airflow and the emulator are started from its ``bin``.
VENV_BIN = Path(sys.executable).parent
