"""
The contract suite's targets: the bundled emulator (always), and a real Dropbox Sign account when
``DROPBOX_SIGN_CONTRACT_API_KEY`` is set (skipped, saying so, otherwise).

Both run the same scenarios through a :class:`~tests.contract.target.Contract`: the provider's own
sync hook on a connection made for the run, raw ``requests`` where the hook hides what is asserted,
every answer recorded (status, ``error_name``, rate-limit headers) into
``build/contract/<target>.json`` so that the emulator's run and a real one can be laid side by side.

Against a real account the suite is careful (``docs/testing.md``, "The contract suite"): it never
calls the emulator's ``/_emulator/`` endpoints, creates only ``test_mode`` requests tagged with the
run id, cancels only those (re-read and checked before the cancel) and keeps under the test-mode
rate limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dropbox_sign_provider.testing import DropboxSignEmulator
from tests.contract.target import (
    API_KEY_ENV,
    BASE_URL_ENV,
    CONN_ID,
    DEFAULT_BASE_URL,
    REAL_MIN_INTERVAL,
    Contract,
    connection,
)


@pytest.fixture(scope="module", params=["emulator", "real"])
def contract(request: pytest.FixtureRequest) -> Iterator[Contract]:
    """The suite's target: the emulator, or the real account of ``DROPBOX_SIGN_CONTRACT_API_KEY``."""
    with pytest.MonkeyPatch.context() as env:
        if request.param == "real":
            api_key = os.environ.get(API_KEY_ENV, "")
            if not api_key:
                pytest.skip(
                    f"real-account mode: set {API_KEY_ENV} (and optionally {BASE_URL_ENV}, default "
                    f"{DEFAULT_BASE_URL}) to run the contract suite against a Dropbox Sign account; "
                    "see docs/testing.md"
                )
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
            env.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection(base_url, api_key))
            contract = Contract("real", base_url, api_key, REAL_MIN_INTERVAL, waits=300.0)
            yield contract
            contract.report()
            return
        with DropboxSignEmulator(cancel_delay=0.5) as emulator:
            api_key = emulator.api_keys[0]
            env.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection(emulator.base_url, api_key))
            contract = Contract("emulator", emulator.base_url, api_key, 0.0, waits=10.0)
            yield contract
            contract.report()
