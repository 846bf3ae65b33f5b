"""A callback receiver for the emulator's events: a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import ipaddress
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dropbox_sign_provider.events.callback import CALLBACK_ACKNOWLEDGEMENT


@dataclass(frozen=True)
class Received:
    """One POST as the receiver got it."""

    content_type: str
    body: bytes
    at: float  # time.monotonic() on arrival

    def parts(self) -> dict[str, str]:
        """The form fields, parsed by the standard library (not by aiohttp, which wrote them)."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {self.content_type}\r\n\r\n".encode() + self.body
        )
        assert message.get_content_type() == "multipart/form-data", self.content_type
        fields = {}
        for part in message.iter_parts():
            assert part.get_content_disposition() == "form-data"
            fields[part.get_param("name", header="content-disposition")] = part.get_content()
        return fields

    def payload(self) -> dict[str, Any]:
        """The ``json`` field, parsed; asserts it is the one field."""
        fields = self.parts()
        assert list(fields) == ["json"], list(fields)
        return dict(json.loads(fields["json"]))


def non_loopback_address() -> str | None:
    """
    An address of this machine that is not a loopback one, or ``None`` when it has none.

    Found by routing a UDP socket towards a documentation address: ``connect`` on UDP sends nothing.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


class Receiver:
    """
    Records every POST; answers the queued replies in turn, then the acknowledgement.

    :param replies: ``(status, body)`` or ``(status, body, headers)`` answers to give first, e.g.
        ``[(500, "oops")]``.
    :param host: the address to listen on; loopback unless a test needs a receiver the emulator
        must not reach.
    """

    def __init__(self, replies: list[tuple[Any, ...]] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.replies = list(replies or [])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(Received(request.headers.get("Content-Type", ""), body, time.monotonic()))
            reply = self.replies.pop(0) if self.replies else (200, CALLBACK_ACKNOWLEDGEMENT)
        status, text, headers = (*reply, {})[:3]
        return web.Response(status=status, text=text, headers=headers)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.url = f"http://{self.host}:{self.port}/callback"

    @property
    def port(self) -> int:
        """The port listened on."""
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def payloads(self) -> list[dict[str, Any]]:
        """The ``json`` field of every POST, in arrival order."""
        with self._lock:
            received = list(self.received)
        return [item.payload() for item in received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` POSTs have arrived; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} callbacks expected, {len(self.received)} received")
            time.sleep(0.02)
