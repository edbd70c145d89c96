"""A single node with its embedded OPC UA server built, for the OPC UA end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mes.node import FarmNode
from tests.farm_helpers import eventually, running_farm
from tests.opcua_secured import make_user
from tests.ports import free_port

# The spool and mock printer the end-to-end tests print with.
SPOOL = {"id": "pla", "type": "PLA", "color": "black", "total_weight_in_grams": 1000}
PRINTER = {"id": "m1", "api": "Mock", "worker": True, "filament_id": "pla",
           "opcua_name": "Printer1", "company": "Prusa Research", "model": "MK4"}


@dataclass
class Farm:
    """The node, a REST client with the admin's token, and the OPC UA endpoint."""

    node: FarmNode
    api: httpx.AsyncClient
    url: str


@contextlib.asynccontextmanager
async def opcua_farm(tmp_path: Path, users: dict[str, str] | None = None,
                     printer: bool = False, **settings: Any) -> AsyncIterator[Farm]:
    """A running node whose address space is built, with `users` (name -> role) and, with
    `printer`, the spool SPOOL and the mock printer PRINTER."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/mes/"
    async with running_farm(tmp_path, opcua_enabled=True, opcua_endpoint=url,
                            **settings) as (node, api):
        async def ready() -> bool:
            return node.opcua is not None and node.opcua.ready.is_set()

        await eventually(ready, 60, "the OPC UA farm to be built")
        for name, role in (users or {}).items():
            await make_user(api, name, role)
        if printer:
            assert (await api.post("/api/v1/filaments", json=SPOOL)).status_code == 201
            assert (await api.post("/api/v1/printers", json=PRINTER)).status_code == 201
        yield Farm(node, api, url)
