"""Shared fixtures: free loopback ports and an in-process single-node farm."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from mes.api.app import create_app
from mes.config import Settings
from mes.node import FarmNode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FarmNode]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                        raft_self=f"127.0.0.1:{free_port()}", raft_write_timeout=3.0)
    farm = FarmNode(settings)
    yield farm
    farm.close()


@pytest.fixture
async def api(node: FarmNode) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://mes") as client:
        yield client
