"""A loopback HTTP/1.1 proxy that delivers chosen requests late, as a slow network would.

Each client connection gets its own upstream connection. Requests are read whole (head and
Content-Length body); one for which `hold` says yes is answered with nothing (the client
times out, or with `drop_client` sees the connection closed) and sent upstream `delay`
seconds later on a fresh connection, whatever the client did meanwhile, or as soon as the
test calls `release()` (a test that needs it delivered after some event, not after some
time). Its late answer is recorded, never relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

Hold = Callable[[bytes, bytes], bool]
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def starts_a_print(head: bytes, body: bytes) -> bool:
    """Whether an OctoPrint or PrusaLink request starts a print (old and new clients)."""
    line = head.split(b"\r\n", 1)[0]
    lower = head.lower()
    return (b'"print":true' in body.replace(b" ", b"")  # OctoPrint select+print
            or b'name="print"\r\n\r\ntrue' in body  # OctoPrint upload with print
            or b"print-after-upload: ?1" in lower  # PrusaLink upload and print
            or line.startswith(b"POST /api/v1/files/"))  # PrusaLink start


@dataclass
class LateProxy:
    """Listens on a free loopback port in front of `upstream_port`."""

    upstream_port: int
    hold: Hold
    delay: float
    times: int = 1  # how many matching requests to hold
    drop_client: bool = False  # close the client's connection at once ("server disconnected")
    held: list[bytes] = field(default_factory=list)  # request lines held
    late_answers: list[bytes] = field(default_factory=list)  # status lines of late answers
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _released: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Base URL of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LateProxy:
        """Listen; returns self."""
        self._loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def release(self) -> None:
        """Deliver held requests now, and later ones at once (from any thread)."""
        assert self._loop is not None and self._released is not None, "not started"
        self._loop.call_soon_threadsafe(self._released.set)

    async def close(self) -> None:
        """Stop listening and drop every connection and pending delivery."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def delivered(self) -> bool:
        """Whether every held request has been delivered and answered."""
        return len(self.late_answers) == len(self.held)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._spawn(_pump(up_reader, writer))
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                head, body = request
                if len(self.held) < self.times and self.hold(head, body):
                    self.held.append(head.split(b"\r\n", 1)[0])
                    self._spawn(self._deliver_late(head + body))
                    if self.drop_client:
                        break
                    continue  # this client hears nothing more on this connection
                up_writer.write(head + body)
                await up_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            up_writer.close()
            writer.close()

    async def _deliver_late(self, data: bytes) -> None:
        assert self._released is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.delay):
                await self._released.wait()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            writer.write(data)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            self.late_answers.append(status.strip())
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if b"transfer-encoding: chunked" in head.lower():
        raise AssertionError("the proxy handles Content-Length bodies only")
    match = _LENGTH.search(head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return head, body


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class ProxyThread:
    """A LateProxy on its own event loop in a thread, for tests that are not async."""

    def __init__(self, proxy: LateProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="late-proxy")

    def __enter__(self) -> LateProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self.proxy

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
