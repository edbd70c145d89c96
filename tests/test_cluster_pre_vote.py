"""Pre-vote on real processes (issue 20 §3): a follower cut off by iptables keeps its term
while it asks in vain, and when the partition heals the leader that did nothing wrong keeps
leading. Without pre-vote the isolated node's term climbed (18 in 8 s) and its first vote
request after healing deposed the leader.

Its vote requests, held in TCP buffers while the rules drop them, arrive late once the
partition heals: late messages are part of what this test sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mes.raft.pre_vote import PRE_VOTE_LEVEL
from tests.cluster import Cluster, ServerProcess, make_leader, post_acknowledged
from tests.netfilter import Partition
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

# Rounds the isolated node must have asked in vain (each is one election timeout).
ROUNDS = 8


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(3, tmp_path / "cluster")
    try:
        yield made.start()
    finally:
        made.stop()


def port_of(node: ServerProcess) -> int:
    return int(node.raft_address.rsplit(":", 1)[1])


def test_an_isolated_follower_keeps_its_term_and_the_leader_keeps_leading(
        cluster: Cluster, partition: Partition) -> None:
    def every_node_asks_first() -> bool:
        views = [n.cluster() for n in cluster.nodes]
        return all(v["cluster_version"] >= PRE_VOTE_LEVEL and v["pre_vote"]["enabled"]
                   for v in views)

    wait_for(every_node_asks_first, 90, "the cluster version to switch pre-vote on")
    # pysyncobj connects from the higher address to the lower: the lowest-address node
    # only has connections to its own port, so dropping that port isolates it fully.
    lonely = min(cluster.nodes, key=lambda n: n.raft_address)
    others = [n for n in cluster.nodes if n is not lonely]
    make_leader(cluster, others[0])
    leader = others[0]
    wait_for(lambda: lonely.cluster()["leader"] == leader.raft_address, 60,
             "the lonely node to follow the leader")
    term = leader.cluster()["term"]
    asked = lonely.cluster()["pre_vote"]["rounds"]

    partition.isolate_port(port_of(lonely))
    wait_for(lambda: lonely.cluster()["pre_vote"]["rounds"] >= asked + ROUNDS, 90,
             f"the isolated node to ask for pre-votes {ROUNDS} times")
    isolated = lonely.cluster()
    assert isolated["term"] == term, isolated
    assert isolated["role"] != "leader", isolated
    # The majority goes on committing meanwhile.
    created = post_acknowledged(leader, "/printers", {"id": "while-cut-off"}, "cut-off")
    assert created is not None and created.status_code == 201, created

    partition.heal()
    committed = leader.cluster()["commit_index"]

    def rejoined() -> bool:
        view = lonely.cluster()
        return bool(view["leader"] == leader.raft_address
                    and view["applied_index"] >= committed)

    try:
        wait_for(rejoined, 90, "the isolated node to follow the leader again and catch up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: isolated node {lonely.cluster()}, leader "
                             f"{leader.cluster()}") from None
    views = {n.index: n.cluster() for n in cluster.nodes}
    assert {v["term"] for v in views.values()} == {term}, views
    assert views[leader.index]["role"] == "leader", views
    assert any(p["id"] == "while-cut-off" for p in lonely.every("/printers"))
