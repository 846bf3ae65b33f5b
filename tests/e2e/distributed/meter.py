"""
A metering pass-through in front of the emulator, so that every API request is attributed to the
Airflow component and the process that sent it.

The emulator's request log has no caller identity. Each component (``worker-1``, ``triggerer-2``,
...) is given a connection whose host is its own port here; the meter forwards every request
unchanged to the emulator, answers with the emulator's answer unchanged (status, body, rate-limit
headers), and records ``{t, component, pid, method, path, status}``. The pid is the process that
owns the client end of the TCP connection, read from ``/proc`` when the connection is first seen:
one task instance and one triggerer are each one process, so this is the "process" of the
rate-limit report.

Usage: ``python meter.py --upstream URL --ports-file FILE --log FILE NAME [NAME ...]``; writes
``{name: port}`` to the ports file once listening. :func:`read_log` reads its log back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, cast

from aiohttp import ClientSession, ClientTimeout, web

# Headers that describe one hop, not the message: never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "proxy-connection",
}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The meter's log so far: one entry per request."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def is_cancel(entry: dict[str, Any]) -> bool:
    return entry["method"] == "POST" and "/signature_request/cancel/" in entry["path"]


def is_get(entry: dict[str, Any]) -> bool:
    """A read of one signature request (a confirmation), not of the list."""
    return (
        entry["method"] == "GET"
        and entry["path"].startswith("/v3/signature_request/")
        and (not entry["path"].endswith("/list"))
    )


def socket_owner(client_port: int, server_port: int) -> int | None:
    """The pid holding the loopback TCP socket ``client_port -> server_port``, or ``None``."""
    wanted = f"0100007F:{client_port:04X}"
    peer = f"0100007F:{server_port:04X}"
    inode = None
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[1] == wanted and fields[2] == peer:
                    inode = fields[9]
                    break
    except OSError:
        return None
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) == target:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


class Meter:
    def __init__(self, upstream: str, names: list[str], log: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.names = names
        self.port_names: dict[int, str] = {}
        self.log = log.open("a", encoding="utf-8", buffering=1)
        self.owners: dict[tuple[Any, int], int | None] = {}
        self.session: ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        arrived = time.time()
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        local = transport.get_extra_info("sockname") if transport else None
        server_port = int(local[1]) if local else 0
        key = (peer, id(transport))
        if key not in self.owners and peer:
            self.owners[key] = await asyncio.get_running_loop().run_in_executor(
                None, socket_owner, int(peer[1]), server_port
            )
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        status = 0
        try:
            async with self.session.request(
                request.method, f"{self.upstream}{request.path_qs}", headers=headers, data=body or None
            ) as answer:
                payload = await answer.read()
                status = answer.status
                reply = web.Response(
                    status=answer.status,
                    body=payload,
                    headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP},
                )
        finally:
            entry = {
                "t": round(arrived, 3),
                "component": self.port_names.get(server_port, "?"),
                "pid": self.owners.get(key),
                "method": request.method,
                "path": request.path,
                "status": status,
            }
            self.log.write(json.dumps(entry) + "\n")
        return reply


async def serve(args: argparse.Namespace) -> None:
    meter = Meter(args.upstream, args.names, Path(args.log))
    # The emulator's Date and rate-limit headers pass through as they are; nothing is decompressed.
    meter.session = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", meter.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports: dict[str, int] = {}
    for name in args.names:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        # Port 0 asks the kernel for a free port: read back which one it gave.
        server = cast(asyncio.Server, site._server)
        port = int(server.sockets[0].getsockname()[1])
        ports[name] = port
        meter.port_names[port] = name
    Path(args.ports_file).write_text(json.dumps(ports), encoding="utf-8")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    await meter.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--upstream", required=True, help="the emulator's root URL")
    parser.add_argument("--ports-file", required=True)
    parser.add_argument("--log", required=True, help="JSON lines, one per request")
    parser.add_argument("names", nargs="+", help="one listening port per component name")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
