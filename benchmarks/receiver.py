"""
The callback receiver of the event scenario, in its own process: the provider's FastAPI app (what the
plugin mounts on Airflow's API server) served by uvicorn on loopback, recording into a throw-away
Airflow metadata database that the measured client reads its board of recent events from.

Run as a module, this file is that process: ``python -m benchmarks.receiver --port N``.
"""

from __future__ import annotations

import base64
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from benchmarks.common import REPO, client_env

#: Seconds the receiver gets to import Airflow and answer.
_READY_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EventsReceiver:
    """
    A metadata database and the callback receiver on it, for as long as the ``with`` block lasts.

    :param conn_id: the ``dropbox_sign`` connection whose API key verifies the events.
    :param connection: its ``AIRFLOW_CONN_*`` value (JSON).
    :param workdir: where the receiver's log goes.
    """

    def __init__(self, conn_id: str, connection: str, workdir: Path) -> None:
        self._home = tempfile.TemporaryDirectory(prefix="bench-events-")
        home = Path(self._home.name)
        self.port = _free_port()
        #: What a process needs to share this database: the measured client reads the board there
        #: as Airflow's server components do (the metastore secrets backend), without a task supervisor.
        self.env = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # One key for both processes, as for every component of a deployment: the board is
            # stored encrypted.
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS": conn_id,
            "_AIRFLOW_PROCESS_CONTEXT": "server",
        }
        self._connections = {conn_id: connection}
        self._log_path = workdir / "events-receiver.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The callback URL the emulator posts to."""
        return f"http://127.0.0.1:{self.port}/callback"

    def __enter__(self) -> EventsReceiver:
        env = client_env(Path(self._home.name), self._connections, self.env)
        with self._log_path.open("wb") as log:
            subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the receiver exited; see {self._log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the receiver did not listen in {_READY_TIMEOUT:g} s; see {self._log_path}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._home.cleanup()


def _serve(port: int) -> None:
    import uvicorn

    from dropbox_sign_provider.plugins.callbacks import app

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    _serve(parser.parse_args().port)
