"""The blocks of the documentation drawn from the code match it: the package's layers (drawn only
when no import cycle exists) and the table of ``[dropbox_sign]`` options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["scripts/architecture.py", "scripts/configuration.py"])
def test_the_page_matches_the_code(script: str) -> None:
    done = subprocess.run([sys.executable, script, "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
