"""A printer stand-in on a loopback port for client tests at the HTTP boundary.

Routes map (method, decoded path) to an answer written as an httpx.Response, or to a
function of the request (an httpx.Request carrying what arrived) that returns one or names
a misbehaviour: HANG (never answers), CLOSE (closes without answering), RESET (resets the
connection), GARBAGE (answers bytes that are not HTTP). Every request is recorded as it
arrived, so tests assert on what was sent.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import aiohttp
import httpx
from aiohttp import web

HANG, CLOSE, RESET, GARBAGE = "hang", "close", "reset", "garbage"
Reply = httpx.Response | str
Handler = Callable[[httpx.Request], Reply]
Routes = dict[tuple[str, str], Reply | Handler]


class StandIn:
    """The running stand-in: its URL, its routes and what it received."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []
        self.url = ""

    def sent(self, method: str, path: str) -> httpx.Request:
        """The first request to `path` with `method`."""
        return next(r for r in self.requests if r.method == method and r.url.path == path)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        seen = httpx.Request(request.method, f"{self.url}{request.raw_path}",
                             headers=list(request.headers.items()), content=body)
        self.requests.append(seen)
        answer = self.routes.get((request.method, unquote(request.path)))
        if answer is None:
            return web.json_response({"error": "no route"}, status=404)
        reply = answer(seen) if callable(answer) else answer
        if isinstance(reply, str):
            return await _misbehave(request, reply)
        headers = {k: v for k, v in reply.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding")}
        return web.Response(status=reply.status_code, body=reply.content, headers=headers)


async def _misbehave(request: web.BaseRequest, how: str) -> web.StreamResponse:
    transport = request.transport
    assert transport is not None
    if how == HANG:
        await asyncio.sleep(3600)
    elif how == GARBAGE:
        transport.write(b"SECRET-BODY not HTTP at all\r\n\r\n")
        transport.close()
    elif how == RESET:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    raise asyncio.CancelledError  # the connection is gone: nothing more to send


@asynccontextmanager
async def stand_in(routes: Routes) -> AsyncIterator[StandIn]:
    """Serve `routes` on a free loopback port until the block ends."""
    state = StandIn(routes)
    server = web.Server(state.handle)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.SockSite(runner, _listening())
    await site.start()
    state.url = f"http://127.0.0.1:{site._sock.getsockname()[1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def refused_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    sock = _listening()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def unreachable() -> AsyncIterator[str]:
    """A loopback URL whose connections time out: a listener with a full backlog."""
    sock = _listening()
    sock.listen(0)
    held = socket.create_connection(sock.getsockname())  # fills the backlog of one
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        held.close()
        sock.close()


def quick_session(**timeouts: Any) -> aiohttp.ClientSession:
    """A printer session with short timeouts (seconds), for tests of timeouts."""
    from mes.printers.http import printer_session

    return printer_session(timeout=aiohttp.ClientTimeout(**timeouts))
