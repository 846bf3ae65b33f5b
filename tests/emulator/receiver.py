"""A callback receiver for the emulator's events: a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dropbox_sign_provider.events import CALLBACK_ACKNOWLEDGEMENT


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


class Receiver:
    """
    Records every POST; answers the queued replies in turn, then the acknowledgement.

    :param replies: ``(status, body)`` answers to give first, e.g. ``[(500, "oops")]``.
    """

    def __init__(self, replies: list[tuple[int, str]] | None = None) -> None:
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
            status, text = self.replies.pop(0) if self.replies else (200, CALLBACK_ACKNOWLEDGEMENT)
        return web.Response(status=status, text=text)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/callback"

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
