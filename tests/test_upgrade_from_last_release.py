"""Upgrade from the last release, 0.4.0, node by node while writes come (issue 20 §3).

0.5.0 changed no command; its data level 5 says that every member answers Raft pre-votes,
which 0.4.0 ignores. So while any node runs 0.4.0 the cluster stays at level 4 and the new
nodes hold plain elections (a mixed cluster that pre-voted would never elect); once the
last node runs 0.5.0 the leader raises the cluster version and every node asks first. A
leader killed (SIGKILL) after that is replaced through pre-votes. Every acknowledged write
is on every node, and the nodes agree on the state.

(tests/test_rolling_upgrade.py upgrades a printing farm from 0.1.0, through every level.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mes.raft.pre_vote import PRE_VOTE_LEVEL
from tests.cluster import ServerProcess, Writers, post_acknowledged
from tests.polling import wait_for
from tests.release import V0_4_0, ReleaseCluster, extract_release

pytestmark = pytest.mark.cluster

# Acknowledged writes that must follow each step (an upgrade, a failover).
WRITES = 10


@pytest.fixture(scope="session")
def last_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 0.4.0's tree (skipped without the commit; failed in CI)."""
    return extract_release(tmp_path_factory, V0_4_0)


def views(cluster: ReleaseCluster) -> list[dict[str, Any]]:
    return [n.cluster() for n in cluster.live()]


def job_ids(node: ServerProcess) -> set[str]:
    return {j["id"] for j in node.every("/print_jobs")}


def more_writes(writers: Writers, what: str) -> None:
    mark = len(writers.acknowledged)
    wait_for(lambda: len(writers.acknowledged) >= mark + WRITES, 120,
             f"{WRITES} acknowledged writes {what}")


def test_a_cluster_of_0_4_0_upgrades_node_by_node_then_elects_through_pre_votes(
        tmp_path: Path, last_release: Path) -> None:
    cluster = ReleaseCluster(3, tmp_path / "cluster", last_release, of=V0_4_0)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        for path, body, key in (
                ("/printers", {"id": "p"}, "printer"),
                ("/filaments", {"id": "f", "type": "PLA", "color": "red",
                                "total_weight_in_grams": 100_000}, "spool")):
            created = post_acknowledged(leader, path, body, key)
            assert created is not None and created.status_code == 201, created
        wait_for(lambda: all(v["cluster_version"] == 4 for v in views(cluster)), 60,
                 "the 0.4.0 cluster at level 4")
        assert all("pre_vote" not in v for v in views(cluster))

        with Writers(cluster.nodes, "w") as writers:
            more_writes(writers, "on 0.4.0")
            order = [*cluster.followers(), cluster.wait_leader()]
            for step, node in enumerate(order, 1):
                node.upgrade()
                more_writes(writers, f"after upgrading node {node.index} ({step} of 3)")
                if step < len(order):
                    # A 0.4.0 member left: no pre-vote (it would ignore them).
                    mine = node.cluster()
                    assert mine["cluster_version"] == 4, mine
                    assert mine["pre_vote"]["enabled"] is False, mine

            def all_pre_vote() -> bool:
                return all(v["cluster_version"] == PRE_VOTE_LEVEL and v["pre_vote"]["enabled"]
                           for v in views(cluster))

            wait_for(all_pre_vote, 90, "the cluster version to reach 5 and pre-vote to be on")
            leader = cluster.wait_leader()
            leader.kill()
            rest = [n for n in cluster.nodes if n is not leader]
            wait_for(lambda: cluster.leader() in rest, 60, "a new leader of the other two")
            elected = sum(n.cluster()["pre_vote"]["elections"] for n in rest)
            assert elected >= 1, [n.cluster()["pre_vote"] for n in rest]
            more_writes(writers, "after the leader was killed")
            leader.start()
            wait_for(leader.healthy, 90, "the killed node to be ready again")
            more_writes(writers, "with the killed node back")
        acknowledged = writers.acknowledged

        index = cluster.assert_same_state(timeout=90)
        assert index > 0
        for node in cluster.nodes:
            assert acknowledged <= job_ids(node), f"node {node.index} lost acknowledged jobs"
            assert node.history[:2] == ["0.4.0", "current"], node.history
            assert node.exits == [0], node.exits  # 0.4.0 stopped cleanly on SIGTERM
    finally:
        cluster.stop()
