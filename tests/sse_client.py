"""A small Server-Sent Events reader over httpx, for tests of /api/v1/events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Sse:
    """One message: its event name, id (None: none given), data and the comments before it."""

    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseStream:
    """An open stream: messages parsed as they arrive; comments and retry: kept aside."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []
        self.retry: int | None = None
        self.ended = False

    async def next(self, timeout: float = 10.0) -> Sse | None:
        """The next message, or None when the server ended the stream."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Sse | None:
        fields: dict[str, str] = {}
        data: list[str] = []
        async for line in self._lines:
            if line == "":
                if data or fields:
                    return Sse(fields.get("event", "message"), fields.get("id"), "\n".join(data))
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value
        self.ended = True
        return None

    async def changes(self, count: int, timeout: float = 10.0) -> list[Sse]:
        """The next `count` change events (skipping telemetry)."""
        found: list[Sse] = []
        while len(found) < count:
            message = await self.next(timeout)
            assert message is not None, f"the stream ended after {found}"
            if message.event == "change":
                found.append(message)
        return found

    async def until(self, predicate: Any, timeout: float = 20.0) -> list[Sse]:
        """Change events up to and including the first that `predicate` accepts."""
        found: list[Sse] = []
        while True:
            message = await self.next(timeout)
            assert message is not None, f"the stream ended after {found}"
            if message.event != "change":
                continue
            found.append(message)
            if predicate(message.json()):
                return found


@contextlib.asynccontextmanager
async def open_stream(client: httpx.AsyncClient, path: str = "/api/v1/events",
                      headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None) -> AsyncIterator[SseStream]:
    """GET an event stream (200 asserted) and read it until the block ends."""
    async with client.stream("GET", path, headers=headers or {}, params=params or {},
                             timeout=httpx.Timeout(30.0, read=60.0)) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield SseStream(response)
