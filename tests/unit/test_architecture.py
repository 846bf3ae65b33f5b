"""The package's layers: a domain that DAG files and triggers can import without tasks or HTTP
clients. (No import cycle, and the architecture page drawn from the code: tests/unit/test_page_blocks.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_domain_imports_no_operator_and_no_http_client() -> None:
    # In a fresh interpreter: what importing every domain module really loads.
    code = (
        "import sys, pkgutil, importlib, dropbox_sign_provider.cancellation as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module(f'{c.__name__}.{m.name}')\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "dropbox_sign_provider.cancellation.watch" in loaded  # the probe did import the domain
    refused = {"requests", "aiohttp", "airflow.sdk.bases.operator", "airflow.models.baseoperator"}
    refused |= {
        m for m in loaded if m.startswith(("dropbox_sign_provider.hooks", "dropbox_sign_provider.operators"))
    }
    assert loaded & refused == set()
