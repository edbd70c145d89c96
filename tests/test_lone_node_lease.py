"""A node alone in its cluster never loses its printers for being busy (issue 20 §2).

Creating 1,100 jobs on one node with 1,000 mock printers delayed its lease renewals
behind apply: the lease lapsed, every worker stopped and the running prints were marked
lost, though nobody else could have taken the printers. Alone, a node's lease does not
lapse once held, and its balancer never expires its own lease; with peers both rules are
as before (another node must be able to take over the printers of a silent one).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from mes.node import FarmNode
from mes.state.ops import Op
from mes.workers.host import ShardLeader
from mes.workers.lease import LeaseKeeper
from tests.shard_helpers import do


class Port(SimpleNamespace):
    """The few things a LeaseKeeper asks of its node."""

    self_address = "127.0.0.1:7000"


def keeper(cluster_size: int) -> LeaseKeeper:
    settings = SimpleNamespace(printers=SimpleNamespace(lease_seconds=10.0, lease_renew=2.0))
    lease = LeaseKeeper(Port(settings=settings, cluster_size=cluster_size))  # type: ignore[arg-type]
    lease.renewals = 1
    lease.valid_until = time.monotonic() - 30.0  # its last renewal applied long ago
    return lease


def test_a_lone_nodes_lease_does_not_lapse_once_held() -> None:
    lone = keeper(cluster_size=1)
    assert lone.valid()
    assert lone.describe() == "held (the only node)"
    never_held = keeper(cluster_size=1)
    never_held.renewals = 0
    assert not never_held.valid()  # it must have held it once (the leader placed printers)


def test_with_peers_a_late_renewal_still_lapses_the_lease() -> None:
    lease = keeper(cluster_size=3)
    assert not lease.valid()
    assert lease.describe().startswith("lapsed ")


class Alone:
    """A FarmNode seen by its balancer with a chosen cluster size and an own lease whose
    renewal the balancer heard long ago."""

    def __init__(self, node: FarmNode, cluster_size: int) -> None:
        self._node = node
        self.cluster_size = cluster_size
        self.submitted: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    async def submit(self, op: str, args: Any, remember: bool = True) -> Any:
        self.submitted.append({"op": op, **args})
        return await self._node.submit(op, args, remember)


async def _silent_own_lease(node: FarmNode, cluster_size: int) -> list[dict[str, Any]]:
    me = node.self_address
    do(node.machine, Op.NODE_LEASE, node=me)
    epoch = int(do(node.machine, Op.LEADER_BEGIN, leader=me)["epoch"])
    port = Alone(node, cluster_size)
    balancer = ShardLeader(port, epoch)  # type: ignore[arg-type]
    await balancer.step()  # hears the renewal now
    seq = balancer.heard[me][0]
    balancer.heard[me] = (seq, time.monotonic() - 3600)  # and nothing since, an hour ago
    await balancer.step()
    return [e for command in port.submitted for e in command.get("expire", [])]


async def test_alone_the_balancer_never_expires_its_own_lease(node: FarmNode) -> None:
    assert await _silent_own_lease(node, cluster_size=1) == []
    leases = node.read_now(lambda c: c.exec_driver_sql(
        "SELECT expired FROM node_leases").scalars().all())
    assert leases == [0]


async def test_with_peers_the_balancer_expires_a_silent_lease(node: FarmNode) -> None:
    expired = await _silent_own_lease(node, cluster_size=3)
    assert [e["node"] for e in expired] == [node.self_address]
