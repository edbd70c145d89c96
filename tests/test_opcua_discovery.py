"""FindServers lists the nodes that announced an OPC UA endpoint through Raft, and nobody on
the network can add a server of theirs to that list (RegisterServer is refused)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Client, ua

from mes.advertised import advertised_opcua_url
from mes.state.ops import Op
from tests.farm_helpers import eventually
from tests.node_opcua import run_node_opcua
from tests.opcua_farm import opcua_farm


async def _uris(client: Client) -> dict[str, list[str]]:
    return {s.ApplicationUri: list(s.DiscoveryUrls or []) for s in await client.find_servers()}


async def test_find_servers_lists_every_announced_node_and_only_those(tmp_path: Path) -> None:
    async with opcua_farm(tmp_path, opcua_allow_anonymous=True) as farm:
        own = f"urn:mes:node:{farm.node.settings.raft_self}"

        async def announced() -> bool:
            nodes = await farm.node.read(
                lambda conn: conn.exec_driver_sql("SELECT opcua_url FROM nodes").all())
            return [row[0] for row in nodes] == [farm.url]

        await eventually(announced, 30, "this node to announce its OPC UA endpoint")
        # Two more members announce (as their nodes would through Raft): one with an
        # endpoint, one without OPC UA.
        for address, url in (("10.1.0.2:7000", "opc.tcp://10.1.0.2:4840/mes/"),
                             ("10.1.0.3:7000", None)):
            outcome = await farm.node.submit(Op.NODE_ANNOUNCE, {
                "raft_address": address, "http_url": f"http://{address.split(':')[0]}:8000",
                "opcua_url": url})
            assert outcome.ok, outcome.error
        async with Client(farm.url, timeout=10) as client:
            async def listed() -> dict[str, list[str]] | None:
                found = await _uris(client)
                return found if len(found) == 2 else None

            found = await eventually(listed, 15, "FindServers to list the announced peer")
            assert set(found) == {own, "urn:mes:node:10.1.0.2:7000"}
            assert found["urn:mes:node:10.1.0.2:7000"] == ["opc.tcp://10.1.0.2:4840/mes/"]
            assert found[own] == [farm.url]
            # A client we did not write sees the same redundant set.
            result = await asyncio.to_thread(run_node_opcua, {
                "endpoint": farm.url, "steps": [{"op": "findServers"}]}, 120.0)
            assert result["ok"], result
            servers = {s["applicationUri"]: s for s in result["steps"][0]["servers"]}
            assert set(servers) == set(found)
            for uri, urls in found.items():
                assert servers[uri]["discoveryUrls"] == urls
                # Server (0) or ClientAndServer (2), the type asyncua describes itself as.
                assert servers[uri]["applicationType"] in ("0", "2"), servers[uri]
            # RegisterServer needs no session in asyncua: refused here, and nothing listed.
            rogue = ua.RegisteredServer()
            rogue.ServerUri = "urn:evil"
            rogue.ProductUri = "urn:evil"
            rogue.ServerNames = [ua.LocalizedText("evil")]
            rogue.ServerType = ua.ApplicationType.Server
            rogue.DiscoveryUrls = ["opc.tcp://203.0.113.9:4840"]
            rogue.IsOnline = True
            request = ua.RegisterServerRequest()
            request.Server = rogue
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await client.uaclient.protocol.send_request(request)
            assert refused.value.code == ua.StatusCodes.BadServiceUnsupported
            assert "urn:evil" not in await _uris(client)
            # A member that leaves is no longer listed.
            outcome = await farm.node.submit(Op.NODE_FORGET, {"raft_address": "10.1.0.2:7000"})
            assert outcome.ok

            async def forgotten() -> bool:
                return set(await _uris(client)) == {own}

            await eventually(forgotten, 15, "FindServers to drop the forgotten node")


def test_advertised_endpoint_replaces_a_wildcard_host() -> None:
    assert advertised_opcua_url("opc.tcp://0.0.0.0:4840/mes/", "http://lab-a.example:8000") \
        == "opc.tcp://lab-a.example:4840/mes/"
    assert advertised_opcua_url("opc.tcp://[::]:4841", "http://[fd00::5]:8000") \
        == "opc.tcp://[fd00::5]:4841"
    assert advertised_opcua_url("opc.tcp://10.0.0.7:4840/", "http://other:8000") \
        == "opc.tcp://10.0.0.7:4840/"
