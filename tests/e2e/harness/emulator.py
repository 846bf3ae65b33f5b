"""The Dropbox Sign emulator as a process of the run, and its admin API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from . import VENV_BIN
from .processes import Processes


class Emulator:
    """
    The ``dropbox-sign-emulator`` command on a free loopback port.

    :param processes: starts and watches it.
    :param api_key: the key it accepts.
    :param port_file: where it writes the port it listens on.
    """

    def __init__(self, processes: Processes, api_key: str, port_file: Path) -> None:
        self.processes = processes
        self.api_key = api_key
        self.port_file = port_file
        self.url = ""

    def start(self, cancel_delay: float = 2.0, *options: str) -> None:
        """Start it with ``options`` and wait until its admin API answers."""
        self.port_file.unlink(missing_ok=True)
        self.processes.spawn(
            "emulator",
            [
                str(VENV_BIN / "dropbox-sign-emulator"),
                "--port",
                "0",
                "--port-file",
                str(self.port_file),
                "--cancel-delay",
                str(cancel_delay),
                "--api-key",
                self.api_key,
                *options,
            ],
        )
        port = self.processes.wait_for_file("the emulator port file", self.port_file, int)
        self.url = f"http://127.0.0.1:{port}"
        self.processes.wait_for("the emulator", lambda: self.admin("GET", "health"), 30, 0.1)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def base_url(self) -> str:
        """The API base a client uses, like ``https://api.hellosign.com/v3``."""
        return f"{self.url}/v3"

    def admin(self, method: str, path: str, payload: Any = None) -> Any:
        """Call the emulator's admin API (``/_emulator/<path>``) and return the JSON answer."""
        response = requests.request(method, f"{self.url}/_emulator/{path}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json()

    def seed(self, requests_: list[dict[str, Any]]) -> list[str]:
        """Create signature requests as described; their ids, in order."""
        created = self.admin("POST", "signature_requests", requests_)
        return [item["signature_request_id"] for item in created]

    def requests_log(self) -> list[dict[str, Any]]:
        """Every API request the emulator received: method, path, status, time, user agent."""
        log: list[dict[str, Any]] = self.admin("GET", "requests_log")
        return log

    def states(self) -> dict[str, str]:
        """Each signature request's state, by id."""
        return {i["signature_request_id"]: i["state"] for i in self.admin("GET", "signature_requests")}
