"""A node's REST API served by uvicorn on a free loopback port, inside the test's loop
(an in-process ASGI transport buffers whole answers: a stream never arrives)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from mes.api.app import create_app
from mes.node import FarmNode
from tests.ports import free_port


@contextlib.asynccontextmanager
async def serving(node: FarmNode) -> AsyncIterator[str]:
    """Serve `node` (its lifespan runs: workers, delivery loop) and yield its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(node), host="127.0.0.1", port=port, log_config=None,
                            lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started or task.done():
                break
            await asyncio.sleep(0.025)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        node.events.close()
        server.should_exit = True
        await task
