"""Upgrade from the last release, 0.6.0, node by node while writes come.

Level 7 (0.7.0) adds job.reorder and keeps each uploader's own name for a file stored once,
which 0.6.0 nodes could not apply. So while any node runs 0.6.0 the cluster stays at level
6: moving a job in the queue is refused with a clear answer (409 `cluster_not_upgraded`,
nothing written), and a job naming only a file takes the stored (first) name. Once the last
node runs 0.7.0 the leader raises the cluster version: jobs move, the scheduler's queue
order is the same on every node, and a job takes its uploader's name. A leader killed
(SIGKILL) after that is replaced through pre-votes. Every acknowledged write is on every
node, and the nodes agree on the state.

(tests/test_rolling_upgrade.py upgrades a printing farm from 0.1.0, through every level.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mes.version import DATA_LEVEL
from tests.cluster import ServerProcess, Writers, post_acknowledged
from tests.farm_helpers import GCODE
from tests.polling import wait_for
from tests.release import V0_6_0, ReleaseCluster, extract_release

pytestmark = pytest.mark.cluster

# Acknowledged writes that must follow each step (an upgrade, a failover).
WRITES = 10


@pytest.fixture(scope="session")
def last_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 0.6.0's tree (skipped without the commit; failed in CI)."""
    return extract_release(tmp_path_factory, V0_6_0)


def views(cluster: ReleaseCluster) -> list[dict[str, Any]]:
    return [n.cluster() for n in cluster.live()]


def job_ids(node: ServerProcess) -> set[str]:
    return {j["id"] for j in node.every("/print_jobs")}


def more_writes(writers: Writers, what: str) -> None:
    mark = len(writers.acknowledged)
    wait_for(lambda: len(writers.acknowledged) >= mark + WRITES, 120,
             f"{WRITES} acknowledged writes {what}")


def upload(node: ServerProcess, name: str) -> str:
    response = node.client.post("/files", files={"file": (name, GCODE)})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    file_id: str = response.json()["id"]
    return file_id


def job_of_file(node: ServerProcess, job_id: str, file_id: str) -> dict[str, Any]:
    created = post_acknowledged(node, "/print_jobs", {
        "id": job_id, "filament_id": "f", "file_id": file_id, "print_weight_in_grams": 1},
        job_id)
    assert created is not None and created.status_code == 201, created
    job: dict[str, Any] = created.json()
    return job


def queue_head(node: ServerProcess) -> list[str]:
    response = node.client.get("/print_jobs/queue", params={"limit": 2})
    return [j["id"] for j in response.json()] if response.status_code == 200 else []


def test_a_cluster_of_0_6_0_upgrades_node_by_node_then_reorders_its_queue(
        tmp_path: Path, last_release: Path) -> None:
    cluster = ReleaseCluster(3, tmp_path / "cluster", last_release, of=V0_6_0)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        for path, body, key in (
                ("/printers", {"id": "p"}, "printer"),
                ("/filaments", {"id": "f", "type": "PLA", "color": "red",
                                "total_weight_in_grams": 100_000}, "spool")):
            created = post_acknowledged(leader, path, body, key)
            assert created is not None and created.status_code == 201, created
        upload(leader, "first.gcode")  # the stored name of GCODE from now on
        wait_for(lambda: all(v["cluster_version"] == 6 for v in views(cluster)), 60,
                 "the 0.6.0 cluster at level 6")

        with Writers(cluster.nodes, "w") as writers:
            more_writes(writers, "on 0.6.0")
            order = [*cluster.followers(), cluster.wait_leader()]
            for step, node in enumerate(order, 1):
                node.upgrade()
                more_writes(writers, f"after upgrading node {node.index} ({step} of 3)")
                if step < len(order):
                    # A 0.6.0 member left: level 6, no reordering, the stored name.
                    mine = node.cluster()
                    assert mine["cluster_version"] == 6, mine
                    job = job_of_file(node, f"mid{step}", upload(node, f"mid{step}.gcode"))
                    assert job["filepath"] == "first.gcode"
                    refused = node.client.post(f"/print_jobs/mid{step}/queue",
                                               json={"priority": 5})
                    assert refused.status_code == 409, refused.text
                    error = refused.json()["error"]
                    assert error["code"] == "cluster_not_upgraded", error
                    assert "needs cluster version 7" in error["message"]
                    assert node.client.get(f"/print_jobs/mid{step}").json()["priority"] == 0

            wait_for(lambda: all(v["cluster_version"] == DATA_LEVEL for v in views(cluster)),
                     90, "cluster version 7 on every node")
            leader = cluster.wait_leader()
            named = job_of_file(leader, "named", upload(leader, "mine.gcode"))
            assert named["filepath"] == "mine.gcode"
            for job_id, place in (("mid1", {"priority": 5}), ("mid2", {"before": "mid1"})):
                moved = post_acknowledged(leader, f"/print_jobs/{job_id}/queue", place,
                                          f"move-{job_id}")
                assert moved is not None and moved.status_code == 200, moved
            for node in cluster.nodes:
                wait_for(lambda n=node: queue_head(n) == ["mid2", "mid1"], 30,
                         f"the moved jobs at the head of node {node.index}'s queue")

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
            assert node.history[:2] == ["0.6.0", "current"], node.history
            assert node.exits == [0], node.exits  # 0.6.0 stopped cleanly on SIGTERM
            assert queue_head(node) == ["mid2", "mid1"]
            assert node.client.get("/print_jobs/named").json()["filepath"] == "mine.gcode"
    finally:
        cluster.stop()
