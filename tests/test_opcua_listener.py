"""The embedded OPC UA server's listener is part of the node's readiness: a node whose OPC UA
port could not be bound says so in /health instead of running on without OPC UA."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.farm_helpers import eventually, running_farm
from tests.ports import free_port


async def test_a_port_taken_after_start_makes_the_node_not_ready_and_says_why(
        tmp_path: Path) -> None:
    with socket.socket() as holder:  # taken by another program after the node's start checks
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        url = f"opc.tcp://127.0.0.1:{port}/mes/"
        async with running_farm(tmp_path, opcua_enabled=True, opcua_endpoint=url) as (node, api):
            async def said() -> bool:
                return any("could not listen" in p for p in node.listener_problems())

            await eventually(said, 60, "the node to say its OPC UA port is taken")
            response = await api.get("/api/v1/health")
            assert response.status_code == 503, response.text
            reasons = response.json()["reasons"]
            assert any(f"could not listen at {url}" in r for r in reasons), reasons


async def test_a_listening_opcua_server_leaves_the_node_ready(tmp_path: Path) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/mes/"
    async with running_farm(tmp_path, opcua_enabled=True, opcua_endpoint=url) as (node, api):
        async def ready() -> bool:
            return (await api.get("/api/v1/health")).status_code == 200

        await eventually(ready, 60, "the node to be ready")
        assert node.listener_problems() == []
        assert node.opcua is not None and node.opcua.started_seconds is not None


async def test_without_opcua_nothing_is_awaited(tmp_path: Path) -> None:
    async with running_farm(tmp_path) as (node, _api):
        assert node.opcua is None
        assert node.listener_problems() == []
