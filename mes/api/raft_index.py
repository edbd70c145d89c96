"""The `X-Raft-Index` response header: the Raft index a write was applied at, or the index
a read's state includes at least.

A pure ASGI middleware opens `mes.app.raft_index.noting_index()` for each request; the
command door (writes) and the read consistency dependency (reads) note an index in it, and
the header goes on the response.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mes.app.raft_index import noting_index

RAFT_INDEX_HEADER = "X-Raft-Index"
# On a read from a node that is not ready (no leader known, catching up, cannot apply): why.
NOT_READY_HEADER = "X-Node-Not-Ready"


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
                if message["type"] == "http.response.start":
                    headers = MutableHeaders(scope=message)
                    if holder.index:
                        headers.append(RAFT_INDEX_HEADER, str(holder.index))
                    if holder.not_ready:
                        headers.append(NOT_READY_HEADER, holder.not_ready)
                await send(message)

            await self.app(scope, receive, send_with_index)
