"""
One target of the contract suite (:class:`Contract`): the hook and the raw calls the scenarios make,
paced, and every answer recorded for ``build/contract/<target>.json``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy

#: The environment variables of the real-account mode.
API_KEY_ENV = "DROPBOX_SIGN_CONTRACT_API_KEY"
BASE_URL_ENV = "DROPBOX_SIGN_CONTRACT_BASE_URL"
DEFAULT_BASE_URL = "https://api.hellosign.com/v3"
#: The connection the suite defines for its hook, through its environment variable.
CONN_ID = "dropbox_sign_contract"
#: Where the reports go: ``build/contract/<target>.json`` at the repository's root.
REPORT_DIR = Path(__file__).resolve().parents[2] / "build" / "contract"
#: Dropbox Sign's test-mode limit is 10 requests a minute: one call every 6.5 s stays under it.
REAL_MIN_INTERVAL = 6.5
#: The metadata key holding the run id on every request the suite sends.
RUN_ID_KEY = "contract_run_id"
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-Ratelimit-Reset")

T = TypeVar("T")


class Contract:
    """
    One target of the suite, what it was told and what it answered.

    :param target: ``emulator`` or ``real``.
    :param base_url: the API's base URL, ending in ``/v3``.
    :param api_key: the account's API key (never written to the report).
    :param min_interval: seconds kept between two calls (the pace of the test-mode limit).
    :param waits: the longest wait, in seconds, for the index and for a cancellation.
    """

    def __init__(self, target: str, base_url: str, api_key: str, min_interval: float, waits: float) -> None:
        self.target = target
        self.base_url = base_url.rstrip("/")
        self.min_interval = min_interval
        self.waits = waits
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
        self.steps: list[dict[str, Any]] = []
        self.observations: dict[str, Any] = {}
        #: What the suite sent and may cancel: ids it created in this run.
        self.created: list[str] = []
        #: The account's address (``GET /account``): the requester of what the suite sends.
        self.account_email = ""
        #: When the cancel was accepted (monotonic seconds).
        self.cancelled_at = 0.0
        self.step = "setup"
        self._last_call = 0.0
        self._started = time.monotonic()
        self._api_key = api_key
        self.hook = DropboxSignHook(CONN_ID, retry_policy=RetryPolicy(max_retries=2))
        # Every answer the hook gets goes through its session: recorded there, the hook unchanged.
        self.hook.get_conn().hooks["response"].append(self._recorded)

    @property
    def real(self) -> bool:
        """Whether this is a real Dropbox Sign account."""
        return self.target == "real"

    def auth(self, api_key: str | None = None) -> tuple[str, str]:
        """HTTP Basic credentials: the account's key, or ``api_key``."""
        return (self._api_key if api_key is None else api_key, "")

    def pace(self) -> None:
        """Wait until the next call keeps within :attr:`min_interval` of the last one."""
        wait = self._last_call + self.min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_call = time.monotonic()

    def call(self, step: str, hook_call: Callable[[], T]) -> T:
        """Run one hook call as ``step``, paced; its answers are recorded under that name."""
        self.step = step
        self.pace()
        return hook_call()

    def raw(self, step: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One call with ``requests`` (the account's key unless ``auth`` is given), paced and recorded."""
        self.step = step
        self.pace()
        kwargs.setdefault("auth", self.auth())
        response = requests.request(method, f"{self.base_url}{path}", timeout=30, **kwargs)
        self._recorded(response)
        return response

    def _recorded(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        error_name = None
        if response.status_code >= 400:
            try:
                error_name = response.json()["error"]["error_name"]
            except (ValueError, KeyError, TypeError):
                error_name = None
        path = requests.utils.urlparse(response.request.url).path
        self.steps.append(
            {
                "step": self.step,
                "method": response.request.method,
                # The path only: the query may hold the run id, never anything secret, but the
                # report compares calls, not their arguments.
                "path": path.removeprefix(requests.utils.urlparse(self.base_url).path),
                "status": response.status_code,
                "error_name": error_name,
                "headers": {name: response.headers.get(name) for name in RATE_LIMIT_HEADERS},
                "elapsed_s": round(time.monotonic() - self._started, 3),
            }
        )
        return response

    def answers(self, step: str) -> list[dict[str, Any]]:
        """The recorded answers of one step."""
        return [entry for entry in self.steps if entry["step"] == step]

    def report(self) -> Path:
        """Write ``build/contract/<target>.json``; return its path."""
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        path = REPORT_DIR / f"{self.target}.json"
        report = {
            "target": self.target,
            "base_url": self.base_url,
            "run_id": self.run_id,
            "duration_s": round(time.monotonic() - self._started, 3),
            "created": self.created,
            "steps": self.steps,
            "observations": self.observations,
        }
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return path


def connection(base_url: str, api_key: str) -> str:
    """The ``AIRFLOW_CONN_*`` value of the suite's connection."""
    # The API root, as a connection's host: the hook appends /v3 itself.
    return json.dumps(
        {"conn_type": "dropbox_sign", "host": base_url.removesuffix("/v3"), "password": api_key}
    )
