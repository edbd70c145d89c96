"""Retention on a real 3-node cluster: the leader prunes finished jobs past JOB_RETENTION_DAYS,
every node deletes the same rows (same digest) and the G-code blobs no job prints any more,
while a job still queued keeps its file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster import Cluster, ServerProcess
from tests.farm_helpers import GCODE
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

# Finished jobs older than this many seconds are pruned (a fraction of a day), and so are
# file records no job names that are older: each file below is named by a job well within
# it (on a loaded machine a few requests can take seconds; 6 s was raced).
RETENTION_SECONDS = 20.0
# How long pruning may take once it is due: a bound on "never".
PRUNED_WITHIN = RETENTION_SECONDS + 60
# The Raft log is compacted (snapshot) before it holds more entries than this.
SNAPSHOT_ENTRIES = 100


def upload(node: ServerProcess, name: str, content: bytes) -> str:
    response = node.client.post("/files", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def blob_path(node: ServerProcess, sha: str) -> Path:
    return node.data_dir / "upload" / sha[:2] / sha


def finish(node: ServerProcess, job_id: str, status: str) -> None:
    for step in (["running"] if status == "done" else []) + [status]:
        response = node.client.post(f"/print_jobs/{job_id}/status", params={"status": step})
        assert response.status_code == 200, response.text


def test_finished_jobs_and_their_files_are_pruned_on_every_node(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path, JOB_RETENTION_DAYS=str(RETENTION_SECONDS / 86_400),
                      AUDIT_RETENTION_DAYS="0", RETENTION_INTERVAL="0.5",
                      BLOB_GRACE_SECONDS="1", AUTO_SCHEDULE="false",
                      RAFT_SNAPSHOT_ENTRIES=str(SNAPSHOT_ENTRIES), RAFT_SNAPSHOT_INTERVAL="2")
    try:
        cluster.start()
        leader = cluster.wait_leader()
        follower = cluster.followers()[0]
        spool = {"id": "f", "type": "PLA", "color": "red", "total_weight_in_grams": 100_000}
        assert follower.client.post("/filaments", json=spool).status_code == 201
        # Two orders of 100 jobs (one printing the old file), all canceled; one job printed
        # to the end; one job still queued with the kept file. Each file is named by a job
        # right after its upload.
        old_file = upload(follower, "old.gcode", GCODE + b"; old\n")
        assert leader.client.post("/print_jobs", json={
            "id": "done", "filament_id": "f", "file_id": old_file,
            "print_weight_in_grams": 1}).status_code == 201
        kept_file = upload(leader, "kept.gcode", GCODE + b"; kept\n")
        assert leader.client.post("/print_jobs", json={
            "id": "queued", "filament_id": "f", "file_id": kept_file,
            "print_weight_in_grams": 1}).status_code == 201
        for order in ("o1", "o2"):
            jobs = [{"id": f"{order}-{i}", "filament_id": "f", "filepath": "x.gcode",
                     "print_weight_in_grams": 1} for i in range(100)]
            jobs[0] = {**jobs[0], "file_id": old_file}
            response = leader.client.post("/orders", json={"id": order, "jobs": jobs})
            assert response.status_code == 201, response.text
        for i, node_order in enumerate(("o1", "o2")):
            for j in range(100):
                finish(cluster.nodes[(i + j) % 3], f"{node_order}-{j}", "canceled")
        finish(follower, "done", "done")
        assert sum(blob_path(n, old_file).is_file() for n in cluster.nodes) >= 2

        def pruned(node: ServerProcess) -> bool:
            jobs = node.every("/print_jobs")
            return [j["id"] for j in jobs] == ["queued"]

        for node in cluster.nodes:
            wait_for(lambda n=node: pruned(n), PRUNED_WITHIN,  # type: ignore[misc]
                     f"node {node.index} to prune the finished jobs")
        for node in cluster.nodes:
            assert node.every("/orders") == []
            assert [f["id"] for f in node.every("/files")] == [kept_file]
            assert node.client.get("/print_jobs/done/history").status_code == 404
            wait_for(lambda n=node: not blob_path(n, old_file).exists(), 60,  # type: ignore[misc]
                     f"node {node.index} to delete the unreferenced blob")
        for node in cluster.nodes:
            # The queued job's file stays where it was stored, and every node can serve it.
            response = node.client.get(f"/files/{kept_file}")
            assert response.status_code == 200
            assert response.content == GCODE + b"; kept\n"
        assert any(blob_path(n, kept_file).is_file() for n in cluster.nodes)
        cluster.assert_same_state()
        # The queued job, once finished, goes too, with its file.
        finish(leader, "queued", "canceled")
        for node in cluster.nodes:
            wait_for(lambda n=node: n.every("/print_jobs") == [], PRUNED_WITHIN,  # type: ignore[misc]
                     f"node {node.index} to prune the last job")
            wait_for(lambda n=node: not blob_path(n, kept_file).exists(), 60,  # type: ignore[misc]
                     f"node {node.index} to delete the last blob")
        applied = cluster.assert_same_state()
        # Over 200 commands went through the log; each node's log holds a bounded tail.
        assert applied > 2 * SNAPSHOT_ENTRIES
        for node in cluster.nodes:
            wait_for(lambda n=node: n.cluster()["log_length"] <= SNAPSHOT_ENTRIES,  # type: ignore[misc]
                     60, f"node {node.index} to keep its Raft log compacted")
    finally:
        cluster.stop()
