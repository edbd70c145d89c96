"""OPC UA on a 3-node cluster: the same address space everywhere, ServiceLevel follows Raft."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, ua

from tests.cluster import Cluster, ServerProcess
from tests.farm_helpers import eventually
from tests.netfilter import Partition

pytestmark = pytest.mark.cluster

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
DI_URI = "http://opcfoundation.org/UA/DI/"


@contextlib.asynccontextmanager
async def connected(node: ServerProcess) -> AsyncIterator[Client]:
    client = Client(node.opcua_url, timeout=30, watchdog_intervall=10)

    async def up() -> bool:
        try:
            await client.connect()
        except (OSError, TimeoutError, ua.UaError):
            return False
        return True

    await eventually(up, 60, f"node {node.index}'s OPC UA server", interval=0.5)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def service_level(client: Client) -> int:
    value: int = await (await client.nodes.server.get_child("0:ServiceLevel")).read_value()
    return value


async def view(client: Client) -> dict[str, Any]:
    """What a client sees of the farm: browse names under the farm view and key values."""
    array = await client.get_namespace_array()
    farm, machinery, di = (array.index(FARM_URI), array.index(MACHINERY_URI),
                           array.index(DI_URI))
    objects = client.nodes.objects
    seen: dict[str, Any] = {}
    for folder in ("Printers", "Jobs", "Filaments"):
        node = await objects.get_child([f"{farm}:PrintFarm", f"{farm}:{folder}"])
        children = await node.get_children()
        seen[folder] = sorted([[(await c.read_browse_name()).Name, c.nodeid.to_string()]
                               for c in children])
    for name in ("Alpha", "Beta"):
        machine = [f"{machinery}:Machines", f"{farm}:{name}"]
        ident = [*machine, f"{di}:Identification"]
        seen[f"{name}.Manufacturer"] = (
            await (await objects.get_child([*ident, f"{di}:Manufacturer"])).read_value()).Text
        seen[f"{name}.Model"] = (
            await (await objects.get_child([*ident, f"{di}:Model"])).read_value()).Text
        seen[f"{name}.State"] = await (
            await objects.get_child([*machine, f"{farm}:State"])).read_value()
    for job in ("j1", "j2"):
        seen[f"{job}.Status"] = await (await objects.get_child(
            [f"{farm}:PrintFarm", f"{farm}:Jobs", f"{farm}:{job}", f"{farm}:Status"])
        ).read_value()
    seen["s1.RemainingWeight"] = await (await objects.get_child(
        [f"{farm}:PrintFarm", f"{farm}:Filaments", f"{farm}:s1", f"{farm}:RemainingWeight"])
    ).read_value()
    seen["ServerUriArray"] = await (await client.nodes.server.get_child(
        ["0:ServerRedundancy", "0:ServerUriArray"])).read_value()
    return seen


def write_through_every_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    spool = {"id": "s1", "type": "PETG", "color": "blue", "total_weight_in_grams": 750}
    assert a.client.post("/filaments", json=spool).status_code == 201
    for node, pid, name in ((b, "p1", "Alpha"), (c, "p2", "Beta")):
        body = {"id": pid, "api": "Mock", "url": f"http://mock-{pid}:5000", "worker": False,
                "opcua_name": name, "filament_id": "s1", "company": "Prusa", "model": "XL"}
        assert node.client.post("/printers", json=body).status_code == 201
    assert a.client.patch("/printers/p2", json={"model": "MK4S"}).status_code == 200
    for node, job in ((c, "j1"), (a, "j2")):
        body = {"id": job, "filament_id": "s1", "filepath": f"{job}.gcode",
                "print_weight_in_grams": 20}
        assert node.client.post("/print_jobs", json=body).status_code == 201, job
    response = b.client.post("/print_jobs/j2/status", params={"status": "Canceled"})
    assert response.status_code == 200, response.text


async def test_same_address_space_everywhere_and_service_level_follows_the_leader(
        tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path / "cluster", OPCUA_ENABLED="true", OPCUA_ALLOW_ANONYMOUS="true")
    try:
        cluster.start()
        write_through_every_node(cluster)
        views: dict[int, dict[str, Any]] = {}
        async with contextlib.AsyncExitStack() as stack:
            clients = {n.index: await stack.enter_async_context(connected(n))
                       for n in cluster.nodes}

            async def all_agree() -> bool:
                for index, client in clients.items():
                    try:
                        views[index] = await view(client)
                    except (ua.UaError, ValueError):  # the model or farm is still loading
                        return False
                first = views[0]
                return first["j2.Status"] == "Canceled" and all(
                    v == first for v in views.values())

            await eventually(all_agree, 60, "every node to show the same farm", interval=0.5)
            first = views[0]
            assert [name for name, _ in first["Printers"]] == ["Alpha", "Beta"]
            assert first["Printers"][0][1].endswith(";s=Printers/p1")  # ids from our ids
            assert first["Beta.Model"] == "MK4S"
            assert first["Alpha.Manufacturer"] == "Prusa"
            assert first["j1.Status"] == "Queued"
            assert first["s1.RemainingWeight"] == 750.0
            assert sorted(first["ServerUriArray"]) == sorted(
                f"urn:mes:node:{n.raft_address}" for n in cluster.nodes)
            # One URL is enough: FindServers on any node lists every node's endpoint.
            everyone = {f"urn:mes:node:{n.raft_address}": [n.opcua_url] for n in cluster.nodes}

            async def every_node_lists_every_node() -> bool:
                for client in clients.values():
                    found = {s.ApplicationUri: list(s.DiscoveryUrls or [])
                             for s in await client.find_servers()}
                    if found != everyone:
                        return False
                return True

            await eventually(every_node_lists_every_node, 30, "FindServers to list every node")

            async def levels_follow() -> ServerProcess | None:
                """The leader the live nodes agree on, once ServiceLevel shows it (255 there,
                200 elsewhere). Found anew each time: on a loaded machine a late heartbeat
                can move leadership while the levels are read."""
                try:
                    leader = cluster.leader()
                except httpx.HTTPError:
                    return None
                if leader is None:
                    return None
                for node in cluster.live():
                    want = 255 if node is leader else 200
                    if await service_level(clients[node.index]) != want:
                        return None
                return leader

            leader = await eventually(levels_follow, 60, "ServiceLevel 255 on the leader")
            leader.kill()
            survivors = cluster.live()
            new_leader = await eventually(levels_follow, 60, "ServiceLevel 255 on the new leader")
            assert new_leader is not leader and new_leader in survivors
            # Still the same farm on the survivors after a write through the new leader.
            assert new_leader.client.post("/print_jobs/j1/status",
                                          params={"status": "Canceled"}).status_code == 200

            async def survivors_agree() -> bool:
                seen = [await view(clients[n.index]) for n in survivors]
                return all(v["j1.Status"] == "Canceled" for v in seen) and seen[0] == seen[1]

            await eventually(survivors_agree, 60, "the survivors to show the cancel")
    finally:
        cluster.stop()


async def test_service_level_1_on_a_node_cut_off_by_a_partition(
        tmp_path: Path, partition: Partition) -> None:
    """A node that hears no leader tells clients so (ServiceLevel 1) while the majority keeps
    255 and 200; after healing every node reports its role again."""
    cluster = Cluster(3, tmp_path / "cluster", OPCUA_ENABLED="true", OPCUA_ALLOW_ANONYMOUS="true")
    try:
        cluster.start()
        cluster.wait_leader()
        async with contextlib.AsyncExitStack() as stack:
            clients = {n.index: await stack.enter_async_context(connected(n))
                       for n in cluster.nodes}

            async def levels() -> dict[int, int]:
                return {index: await service_level(client) for index, client in clients.items()}

            async def roles_shown() -> bool:
                try:
                    leader = cluster.leader()
                except httpx.HTTPError:  # a probe slower than its timeout: not yet
                    return False
                if leader is None:
                    return False
                seen = await levels()
                return all(seen[n.index] == (255 if n is leader else 200) for n in cluster.nodes)

            await eventually(roles_shown, 60, "ServiceLevel 255 on the leader, 200 elsewhere")
            # pysyncobj connects from the higher address to the lower: dropping the lowest
            # address's port cuts that node off from both others (its OPC UA port stays open).
            cut = min(cluster.nodes, key=lambda n: n.raft_address)
            majority = [n for n in cluster.nodes if n is not cut]
            partition.isolate_port(int(cut.raft_address.rsplit(":", 1)[1]))

            async def cut_off_shown() -> bool:
                seen = await levels()
                return seen[cut.index] == 1 and sorted(
                    seen[n.index] for n in majority) == [200, 255]

            await eventually(cut_off_shown, 60,
                             "ServiceLevel 1 on the cut-off node, 255 and 200 on the majority")
            partition.heal()
            await eventually(roles_shown, 60, "every node's role shown again after healing")
    finally:
        cluster.stop()
