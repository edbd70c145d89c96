"""A redundancy-aware client keeps its subscription through a leader kill (issue 21 §1).

asyncua's HaClient (Warm, Part 4 6.6.2.4.5.3; a client stack we did not write) connects to
every node, reads each one's ServiceLevel, and keeps its subscription live on the best
server only, counting 200-255 as Healthy. When the leader is killed (SIGKILL) it must move
the subscription to a node still serving, and the value written after the kill (through
the new leader) must reach it within seconds; nothing it receives afterwards is older than
what was written before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client
from asyncua.client.ha.ha_client import HaClient, HaConfig, HaMode

from tests.cluster import Cluster, ServerProcess, post_acknowledged
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
BEFORE, AFTER = 900.0, 777.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(3, tmp_path / "cluster", OPCUA_ENABLED="true", OPCUA_ALLOW_ANONYMOUS="true")
    try:
        yield made.start()
    finally:
        made.stop()


class Values:
    """What the subscription delivered, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Any]] = []

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.seen.append((time.monotonic(), value))

    def values(self) -> list[Any]:
        return [v for _, v in self.seen]


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def set_weight(node: ServerProcess, grams: float, key: str) -> None:
    answer = node.client.patch("/filaments/s1", json={"remaining_weight_in_grams": int(grams)},
                               headers={"Idempotency-Key": key})
    assert answer.status_code == 200, answer.text


async def test_a_warm_redundancy_client_follows_the_leader_through_a_kill(
        cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    created = post_acknowledged(leader, "/filaments", {
        "id": "s1", "type": "PLA", "color": "red", "total_weight_in_grams": 1000}, "s1")
    assert created is not None and created.status_code == 201, created
    for node in cluster.nodes:
        await asyncio.to_thread(wait_for, node.opcua_ready, 120,
                                f"node {node.index}'s address space")
    async with Client(leader.opcua_url, timeout=30) as plain:  # the same on every node
        ns = (await plain.get_namespace_array()).index(FARM_URI)
    config = HaConfig(HaMode.WARM, keepalive_timer=1, manager_timer=1, reconciliator_timer=1,
                      request_timeout=5, session_timeout=30,
                      urls=[n.opcua_url for n in cluster.nodes])
    client = HaClient(config)
    values = Values()
    await client.start()
    try:
        name = await client.create_subscription(100, values)
        # (HaClient's reconciliator cannot monitor an nsu= node id: by index.)
        await client.subscribe_data_change(name, [f"ns={ns};s=Filaments/s1/RemainingWeight"])
        await until(lambda: 1000.0 in values.values(), 60, "the first value")
        await until(lambda: client.active_client is not None
                    and client.active_client.server_url.port == int(
                        leader.opcua_url.rsplit(":", 1)[1].split("/")[0]), 60,
                    "the client to pick the leader (ServiceLevel 255)")
        await asyncio.to_thread(set_weight, leader, BEFORE, "before")
        await until(lambda: BEFORE in values.values(), 30, "the value written before the kill")

        leader.kill()
        killed = time.monotonic()
        new_leader = await asyncio.to_thread(cluster.wait_leader)
        await asyncio.to_thread(set_weight, new_leader, AFTER, "after")
        await until(lambda: AFTER in values.values(), 60,
                    "the value written after the kill, on another node")
        arrived = next(t for t, v in values.seen if v == AFTER)
        print(f"the first value after the kill arrived {arrived - killed:.1f} s after it")
        after = [v for t, v in values.seen if t >= arrived]
        assert set(after) == {AFTER}, values.values()  # nothing staler once it arrived
    finally:
        await client.stop()
