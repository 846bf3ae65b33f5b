"""
The server's lifecycle: binding an emulator's application and serving it, in a thread of its own
(what tests do) or in the caller's event loop until SIGINT or SIGTERM (what the command line does),
with the background work that runs while it serves: completing due cancellations and delivering
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from dropbox_sign_provider.testing.emulator.access import ADMIN_TOKEN_HEADER, check_bind
from dropbox_sign_provider.testing.emulator.routes import build_app
from dropbox_sign_provider.testing.emulator.state import EmulatorState

log = logging.getLogger(__name__)

# How often due cancellations are completed and held events released, while serving.
_SWEEP_INTERVAL = 0.05


@dataclass
class _Lifecycle:
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None
    runner: web.AppRunner | None = None
    session: aiohttp.ClientSession | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def root_url(host: str, port: int) -> str:
    """The API root for an address, e.g. ``http://127.0.0.1:8000`` (an IPv6 address bracketed)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class Server:
    """
    Serves one emulator's state, on the host its settings name when it starts.

    :param state: the emulator's state, its settings with it.
    :param port: the port to bind, ``0`` for a free one.
    """

    def __init__(self, state: EmulatorState, port: int) -> None:
        self._state = state
        self._requested_port = port
        #: The port bound by the last start, ``None`` before the first one.
        self.port: int | None = None
        self._lifecycle_lock = threading.Lock()
        self._life = _Lifecycle()

    def start(self) -> None:
        """
        Bind and serve in a background thread with its own event loop; return once it accepts
        connections. Does nothing when already serving.

        :raises OSError: when the address cannot be bound.
        """
        with self._lifecycle_lock:
            if self._life.thread is not None:
                return
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._thread_main, args=(ready, failure), name="dropbox-sign-emulator", daemon=True
            )
            self._life.thread = thread
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                self._life = _Lifecycle()
                raise failure[0]

    def stop(self) -> None:
        """Stop serving from the background thread and release the port; calling it again does nothing."""
        with self._lifecycle_lock:
            loop, thread = self._life.loop, self._life.thread
            if loop is None or thread is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self.astop(), loop).result(timeout=15)
            except Exception:
                log.exception("the emulator did not shut down cleanly")
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=15)
            self._life = _Lifecycle()

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.astart())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        self._life.loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def astart(self) -> None:
        """
        Bind and serve in the running event loop, the background work started.

        :raises ValueError: for a host that is not a loopback address without ``allow_remote``.
        :raises OSError: when the address cannot be bound.
        """
        settings = self._state.settings
        # Checked again here, not only when the emulator is built: ``host`` is a plain attribute and
        # may have changed.
        check_bind(settings.host, settings.allow_remote)
        # A short shutdown timeout: a request sleeping in the latency fault must not hold stop() for 60 s.
        runner = web.AppRunner(
            build_app(self._state), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._life.runner = runner
        self.port = int(runner.addresses[0][1])
        # Always, not only with a callback URL: PUT /v3/account can set one at any time.
        self._life.session = self._state.dispatcher.open_session()
        self._spawn(self._sweep())

    async def astop(self) -> None:
        """Stop the background work, then serving; in the loop :meth:`astart` ran in."""
        tasks = list(self._life.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._life.session is not None:
            await self._life.session.close()
        if self._life.runner is not None:
            await self._life.runner.cleanup()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._life.tasks.add(task)
        task.add_done_callback(self._life.tasks.discard)

    async def _sweep(self) -> None:
        """Complete due cancellations (their events with them) and start the deliveries now due."""
        session = self._life.session
        assert session is not None
        while True:
            batch = self._state.complete_due()
            if batch:
                self._spawn(self._state.dispatcher.deliver(session, batch, self._spawn))
            await asyncio.sleep(_SWEEP_INTERVAL)

    async def serve_forever(self, port_file: str | None = None, *, token_generated: bool = False) -> None:
        """
        Serve in the running event loop until SIGINT or SIGTERM, telling scripts where once serving.

        :param port_file: where to write the bound port once serving, or ``None``. When the admin API
            requires a token, it is written first to the same path plus ``.admin-token``.
        :param token_generated: whether the admin token was generated (then printed, without a port
            file), rather than given.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await self.astart()
        try:
            port, settings = self.port, self._state.settings
            assert port is not None
            if settings.admin_token is not None:
                _announce_admin_token(settings.admin_token, token_generated, port_file)
            if port_file:
                write_whole(port_file, f"{port}\n")
            print(f"Dropbox Sign emulator serving {root_url(settings.host, port)}/v3", flush=True)
            await stop.wait()
        finally:
            await self.astop()


def _announce_admin_token(token: str, generated: bool, port_file: str | None) -> None:
    """Tell where the admin token is, once, on stderr: stdout holds only the line scripts read."""
    if port_file:
        token_file = f"{port_file}.admin-token"
        write_whole(token_file, f"{token}\n", mode=0o600)
        where = f"is in {token_file}"
    elif generated:
        where = f"is {token}"
    else:
        where = "is the one given (admin_token, --admin-token)"
    print(
        f"Admin API token {where}: send it in the {ADMIN_TOKEN_HEADER} header.",
        file=sys.stderr,
        flush=True,
    )


def write_whole(path: str, text: str, mode: int = 0o666) -> None:
    """Write a file aside then rename it, so that a script polling it never reads half of it."""
    partial = f"{path}.partial"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)
