"""The `X-Raft-Index` response header: the Raft index a write was applied at, or the index
a read's state includes at least.

A pure ASGI middleware gives each request a holder; `commit` (writes) and the read
consistency dependency (reads) note an index in it, and the header goes on the response.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RAFT_INDEX_HEADER = "X-Raft-Index"


class _Holder:
    __slots__ = ("index",)

    def __init__(self) -> None:
        self.index = 0


_current: ContextVar[_Holder | None] = ContextVar("raft_index", default=None)


def note_index(index: int) -> None:
    """Report `index` on this request's response (the highest noted wins)."""
    holder = _current.get()
    if holder is not None and index > holder.index:
        holder.index = index


class RaftIndexHeader:
    """Adds `X-Raft-Index` to every response for which an index was noted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with noting_index() as holder:

            async def send_with_index(message: Message) -> None:
                if message["type"] == "http.response.start" and holder.index:
                    MutableHeaders(scope=message).append(RAFT_INDEX_HEADER, str(holder.index))
                await send(message)

            await self.app(scope, receive, send_with_index)


@contextmanager
def noting_index() -> Iterator[_Holder]:
    """Collect the indexes noted inside the block (a request, or an OPC UA method call)."""
    holder = _Holder()
    token = _current.set(holder)
    try:
        yield holder
    finally:
        _current.reset(token)
