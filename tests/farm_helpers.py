"""Helpers for tests that run printer workers in-process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from mes.api.app import create_app
from mes.auth.bootstrap import ensure_admin
from mes.config import Settings
from mes.node import FarmNode
from mes.raft.node import RaftTuning
from tests.auth import admin_headers
from tests.ports import free_port

T = TypeVar("T")

GCODE = b"; a tiny print\nG28\nG1 X10 Y10 Z0.2 F3000\nG1 X20 E1\nM84\n"


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float,
                     what: str, interval: float = 0.05) -> T:
    """Poll an async condition until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


async def raise_to_data_level(node: FarmNode) -> None:
    """Raise an in-process node's cluster version to this release's data level, as its
    leader loop would (fixtures that run no lifespan have none)."""
    from mes.version import DATA_LEVEL

    reporter = node.versions_reporter()

    async def raised() -> bool:
        await reporter.step()
        return bool(node.cluster_version.level() == DATA_LEVEL)

    await eventually(raised, 30, f"the cluster version to reach {DATA_LEVEL}")


async def at_data_level(api: httpx.AsyncClient) -> None:
    """Wait until the node's cluster version is this release's data level (a new node
    raises it within seconds of its start; formats of the new level wait for it)."""
    from mes.version import DATA_LEVEL

    async def raised() -> bool:
        return bool((await api.get("/api/v1/cluster")).json()["cluster_version"] == DATA_LEVEL)

    await eventually(raised, 30, f"the cluster version to reach {DATA_LEVEL}")


async def emulated_printer(api: httpx.AsyncClient, printer_id: str, kind: str,
                           url: str) -> None:
    """A spool `pla` and a driven printer of api `kind` at `url` (an emulator's, key
    `mockkey`) holding it, once the cluster version allows every kind."""
    spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 800}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    await at_data_level(api)
    printer = {"id": printer_id, "api": kind, "url": url, "api_key": "mockkey",
               "worker": True, "filament_id": "pla"}
    created = await api.post("/api/v1/printers", json=printer)
    assert created.status_code == 201, created.text


async def upload(api: httpx.AsyncClient, name: str = "part.gcode",
                 content: bytes = GCODE) -> dict[str, Any]:
    response = await api.post("/api/v1/files", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def upload_as(api: httpx.AsyncClient, user_id: str, name: str = "part.gcode",
                    content: bytes = GCODE) -> dict[str, Any]:
    """Upload a file as `user_id` (a token made by the admin client `api`): a user prints
    only files they uploaded."""
    token = await api.post("/api/v1/tokens", json={"name": "upload", "user_id": user_id})
    assert token.status_code == 201, token.text
    response = await api.post("/api/v1/files", files={"file": (name, content)},
                              headers={"Authorization": f"Bearer {token.json()['token']}"})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


# In-process single nodes elect themselves at once (about 0.2 s to leader instead of 0.6):
# no peer competes, so the short timeouts cost nothing. Server processes keep the defaults.
SINGLE_NODE = RaftTuning(heartbeat=0.01, election_min=0.04, election_max=0.08)


def farm_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """A single node with fast workers and fast mock printers, its files under tmp_path."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data", "upload_path": tmp_path / "upload",
        "raft_self": f"127.0.0.1:{free_port()}", "printer_worker_interval": 0.1,
        "mock_printer_interval": 0.05, "mock_printer_job_time": 6, "auto_clear_bed": True,
        **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def api_with(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API of a node with `overrides`, as the admin, without workers or lifespan."""
    node = FarmNode(farm_settings(tmp_path, **overrides), tuning=SINGLE_NODE)
    try:
        await ensure_admin(node)  # as the leader loop does (no lifespan runs here)
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://mes",
                                     headers=admin_headers()) as client:
            yield client
    finally:
        node.close()


@contextlib.asynccontextmanager
async def running_farm(tmp_path: Path, **overrides: Any
                       ) -> AsyncIterator[tuple[FarmNode, httpx.AsyncClient]]:
    """A node with its workers running, and a client of its REST API."""
    node = FarmNode(farm_settings(tmp_path, **overrides), tuning=SINGLE_NODE)
    try:
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://mes",
                                     headers=admin_headers()) as client:
            await node.start_background()
            await ensure_admin(node)  # the leader loop does too; tests need it before they begin
            try:
                yield node, client
            finally:
                await node.stop_background()
    finally:
        node.close()
