"""Upgrade from the last release, 0.5.0, node by node while writes come.

Level 6 (0.6.0) adds printers of api Moonraker and the OPC UA endpoint in each node's
announcement, which 0.5.0 nodes could not apply. So while any node runs 0.5.0 the cluster
stays at level 5: a Moonraker printer is refused with a clear answer (409
`cluster_not_upgraded`, nothing written), and announcements are written without the
endpoint. Once the last node runs 0.6.0 the leader raises the cluster version, every node
announces its endpoint again (FindServers then lists every node), and Moonraker printers
are accepted. A leader killed (SIGKILL) after that is replaced through pre-votes. Every
acknowledged write is on every node, and the nodes agree on the state.

(tests/test_rolling_upgrade.py upgrades a printing farm from 0.1.0, through every level.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mes.version import DATA_LEVEL
from tests.cluster import ServerProcess, Writers, post_acknowledged
from tests.polling import wait_for
from tests.release import V0_5_0, ReleaseCluster, extract_release

pytestmark = pytest.mark.cluster

# Acknowledged writes that must follow each step (an upgrade, a failover).
WRITES = 10
MOONRAKER = {"id": "k1", "api": "Moonraker", "url": "http://127.0.0.1:7125", "worker": False}


@pytest.fixture(scope="session")
def last_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 0.5.0's tree (skipped without the commit; failed in CI)."""
    return extract_release(tmp_path_factory, V0_5_0)


def views(cluster: ReleaseCluster) -> list[dict[str, Any]]:
    return [n.cluster() for n in cluster.live()]


def job_ids(node: ServerProcess) -> set[str]:
    return {j["id"] for j in node.every("/print_jobs")}


def more_writes(writers: Writers, what: str) -> None:
    mark = len(writers.acknowledged)
    wait_for(lambda: len(writers.acknowledged) >= mark + WRITES, 120,
             f"{WRITES} acknowledged writes {what}")


def test_a_cluster_of_0_5_0_upgrades_node_by_node_then_takes_moonraker_printers(
        tmp_path: Path, last_release: Path) -> None:
    cluster = ReleaseCluster(3, tmp_path / "cluster", last_release, of=V0_5_0,
                             OPCUA_ENABLED="true", OPCUA_ALLOW_ANONYMOUS="true")
    try:
        cluster.start()
        leader = cluster.wait_leader()
        for path, body, key in (
                ("/printers", {"id": "p"}, "printer"),
                ("/filaments", {"id": "f", "type": "PLA", "color": "red",
                                "total_weight_in_grams": 100_000}, "spool")):
            created = post_acknowledged(leader, path, body, key)
            assert created is not None and created.status_code == 201, created
        wait_for(lambda: all(v["cluster_version"] == 5 for v in views(cluster)), 60,
                 "the 0.5.0 cluster at level 5")

        with Writers(cluster.nodes, "w") as writers:
            more_writes(writers, "on 0.5.0")
            order = [*cluster.followers(), cluster.wait_leader()]
            for step, node in enumerate(order, 1):
                node.upgrade()
                more_writes(writers, f"after upgrading node {node.index} ({step} of 3)")
                if step < len(order):
                    # A 0.5.0 member left: level 5, and no Moonraker printer yet.
                    mine = node.cluster()
                    assert mine["cluster_version"] == 5, mine
                    refused = node.client.post("/printers", json=MOONRAKER)
                    assert refused.status_code == 409, refused.text
                    error = refused.json()["error"]
                    assert error["code"] == "cluster_not_upgraded", error
                    assert error["field"] == "api"
                    assert "a printer of api 'Moonraker' needs cluster version 6" \
                        in error["message"]
                    assert node.client.get("/printers/k1").status_code == 404

            def upgraded_and_announced() -> bool:
                for view in views(cluster):
                    if view["cluster_version"] != DATA_LEVEL:
                        return False
                    if not all(n["opcua_url"] for n in view["nodes"]):
                        return False
                return True

            wait_for(upgraded_and_announced, 90,
                     "cluster version 6 and every node's OPC UA endpoint announced")
            endpoints = {n["address"]: n["opcua_url"] for n in views(cluster)[0]["nodes"]}
            assert endpoints == {n.raft_address: n.opcua_url for n in cluster.nodes}
            leader = cluster.wait_leader()
            created = post_acknowledged(leader, "/printers", MOONRAKER, "moonraker")
            assert created is not None and created.status_code == 201, created
            assert created.json()["api"] == "Moonraker"

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
            assert node.history[:2] == ["0.5.0", "current"], node.history
            assert node.exits == [0], node.exits  # 0.5.0 stopped cleanly on SIGTERM
            assert node.client.get("/printers/k1").json()["api"] == "Moonraker"
    finally:
        cluster.stop()
