"""
Slow clients against the receiver served by a real HTTP server (uvicorn, as Airflow's API server
runs it) on loopback: a body that trickles in is cut off at the read deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from dropbox_sign_provider.plugins import callbacks
from dropbox_sign_provider.plugins.callbacks import app

#: The deadline these tests run with, shorter than the default so that they run in seconds.
DEADLINE = 1.0
SLOW_CLIENTS = 200


@pytest.fixture
def server(accounts: dict[str, str], recorded: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The receiver's app served by uvicorn on a free loopback port; yields the port."""
    monkeypatch.setattr(callbacks, "BODY_READ_TIMEOUT", DEADLINE)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    while not served.started:
        time.sleep(0.01)
    port = served.servers[0].sockets[0].getsockname()[1]
    yield port
    served.should_exit = True
    thread.join(timeout=10)


def slow_client(port: int, stop: threading.Event, results: list[tuple[float, bytes]]) -> None:
    """Declares a 1 MB body, sends a byte every 0.2 s; records when the server answered or closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /callback HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n"
        )
        sock.settimeout(0.2)
        answer = b""
        while not stop.is_set():
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                try:
                    sock.sendall(b"-")
                except OSError:
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and b'"}' in answer:
                break
        results.append((time.monotonic() - started, answer))


def run_slow_clients(port: int, n: int) -> list[tuple[float, bytes]]:
    stop, results = threading.Event(), []  # type: ignore[var-annotated]
    threads = [threading.Thread(target=slow_client, args=(port, stop, results)) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE + 20)
    stop.set()
    return results


def test_slow_clients_are_cut_off_at_the_read_deadline(server: int, recorded: Any) -> None:
    results = run_slow_clients(server, SLOW_CLIENTS)
    assert len(results) == SLOW_CLIENTS
    held = sorted(seconds for seconds, _ in results)
    assert held[-1] < DEADLINE + 5, held[-5:]
    answers = [answer for _, answer in results]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
    assert all(b"connection: close" in a.lower() for a in answers)
    assert recorded.nothing()


def test_a_client_that_sends_its_body_at_once_is_served(
    server: int, make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    import json

    import httpx

    body = json.dumps(make_callback())
    response = httpx.post(f"http://127.0.0.1:{server}/callback", files={"json": (None, body)}, timeout=10)
    assert response.status_code == 200, response.text
    assert len(recorded.asset_events()) == 1
