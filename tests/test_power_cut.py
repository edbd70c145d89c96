"""Power cuts and unreadable files on clusters of real `server` processes."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth import admin_headers
from tests.cluster import Cluster, ServerProcess
from tests.polling import wait_for
from tests.power_cut import cut_power_to_synced
from tests.test_cluster import seed, write_job

pytestmark = pytest.mark.cluster

MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    started: list[Cluster] = []

    def build(size: int, **env: str) -> Cluster:
        cluster = Cluster(size, tmp_path / f"cluster{len(started)}", **env)
        started.append(cluster)
        return cluster.start()

    yield build
    for cluster in started:
        cluster.stop()


def missing_jobs(node: ServerProcess, acknowledged: set[str]) -> set[str]:
    return {j for j in acknowledged
            if node.client.get(f"/print_jobs/{j}", timeout=10.0).status_code != 200}


def assert_all_held(nodes: list[ServerProcess], acknowledged: set[str], timeout: float) -> None:
    for node in nodes:
        try:
            wait_for(lambda n=node: not missing_jobs(n, acknowledged),  # type: ignore[misc]
                     timeout, f"node {node.index} to hold all {len(acknowledged)} jobs")
        except AssertionError as exc:
            health = node.client.get("/health", timeout=10.0)
            raise AssertionError(f"{exc}; missing {sorted(missing_jobs(node, acknowledged))}; "
                                 f"health {health.status_code} {health.text}; "
                                 f"log tail:\n{node.log_tail()}") from None


def write_until_stopped(node: ServerProcess, prefix: str, stop: threading.Event,
                        acknowledged: set[str]) -> None:
    """Submit jobs one after another; record the ids the node acknowledged. A request
    without an answer ends the writer only once the node is gone (a slow answer on a loaded
    machine is not the power cut)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}/api/v1",
                      timeout=30.0, headers=admin_headers()) as client:
        n = 0
        while not stop.is_set():
            job_id = f"{prefix}-{n}"
            body = {"id": job_id, "printer_id": "p", "filament_id": "f",
                    "filepath": f"{job_id}.gcode", "print_weight_in_grams": 1}
            try:
                response = client.post("/print_jobs", json=body,
                                       headers={"Idempotency-Key": job_id})
            except httpx.HTTPError:
                if stop.is_set() or not node.alive:
                    return  # the node is gone
                n += 1
                continue
            if response.status_code == 201:
                acknowledged.add(job_id)
            n += 1


def test_whole_cluster_power_cut_keeps_every_acknowledged_write(
        make_cluster: MakeCluster) -> None:
    # Snapshots every 25 entries: the cut also goes through compacted journals.
    cluster = make_cluster(3, RAFT_SYNC_TRACE="1", RAFT_SNAPSHOT_ENTRIES="25",
                           RAFT_SNAPSHOT_INTERVAL="3")
    seed(cluster.nodes[0])
    acknowledged = {f"j{i}" for i in range(40) if write_job(cluster.nodes[i % 3], f"j{i}")}
    assert len(acknowledged) == 40
    # Writers keep going while the power goes off, so the journals have unsynced tails.
    stop = threading.Event()
    in_flight: list[set[str]] = [set() for _ in range(6)]
    writers = [threading.Thread(target=write_until_stopped,
                                args=(cluster.nodes[w % 3], f"w{w}", stop, in_flight[w]))
               for w in range(6)]
    for writer in writers:
        writer.start()
    wait_for(lambda: sum(map(len, in_flight)) >= 60, 120, "writes under load")
    for node in cluster.nodes:  # all at once, as a power cut does
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
    for node in cluster.nodes:
        node.kill()
    stop.set()
    for writer in writers:
        writer.join(10)
    for written in in_flight:
        acknowledged |= written
    for node in cluster.nodes:
        cut_power_to_synced(node.data_dir)  # drops the unsynced tails (hundreds of bytes)
    for node in cluster.nodes:
        node.start()
    cluster.wait_leader()
    assert_all_held(cluster.nodes, acknowledged, 120)
    assert write_job(cluster.nodes[1], "after-power-cut")


def test_follower_with_corrupt_snapshot_rebuilds_from_its_peers(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3, RAFT_SNAPSHOT_ENTRIES="15", RAFT_SNAPSHOT_INTERVAL="3")
    seed(cluster.nodes[0])
    acknowledged = {f"a{i}" for i in range(40) if write_job(cluster.nodes[i % 3], f"a{i}")}
    assert len(acknowledged) == 40
    wait_for(lambda: all((n.data_dir / "raft.snapshot").exists() for n in cluster.nodes), 60,
             "every node to write a snapshot")
    victim = cluster.followers()[0]
    victim.kill()
    (victim.data_dir / "raft.snapshot").write_bytes(b"\x1f\x8b not a snapshot")
    for i in range(10):
        assert write_job(cluster.live()[i % 2], f"b{i}")
        acknowledged.add(f"b{i}")
    victim.start()  # answers instead of exiting
    assert_all_held([victim], acknowledged, 120)
    assert "rebuilds from its peers" in victim.log_tail()
    wait_for(lambda: "this node votes again" in victim.log_tail(), 60, "the rebuild to end")
    assert list(victim.data_dir.glob("raft.snapshot.bad-*"))
    assert write_job(victim, "after-rebuild")


def test_single_node_with_corrupt_snapshot_stops_with_a_clear_message(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(1, RAFT_SNAPSHOT_ENTRIES="5", RAFT_SNAPSHOT_INTERVAL="1")
    node = cluster.nodes[0]
    seed(node)
    for i in range(15):
        assert write_job(node, f"s{i}")
    wait_for(lambda: (node.data_dir / "raft.snapshot").exists(), 60, "a snapshot")
    node.kill()
    (node.data_dir / "raft.snapshot").write_bytes(b"garbage")
    with contextlib.suppress(AssertionError):  # it may exit before or after answering /health
        node.start()
    wait_for(lambda: not node.alive, 120, "the node to stop")
    assert node.process is not None and node.process.returncode == 70
    assert "no peers to rebuild from" in node.log_tail()
    assert (node.data_dir / "raft.snapshot").read_bytes() == b"garbage"  # left for the operator


def test_follower_with_corrupt_journal_rebuilds_from_its_peers(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3)
    seed(cluster.nodes[0])
    acknowledged = {f"c{i}" for i in range(20) if write_job(cluster.nodes[i % 3], f"c{i}")}
    assert len(acknowledged) == 20
    victim = cluster.followers()[0]
    victim.kill()
    journal = victim.data_dir / "raft.journal"
    raw = bytearray(journal.read_bytes())
    raw[60:80] = b"\xff" * 20  # inside the first records
    journal.write_bytes(bytes(raw))
    victim.start()
    assert_all_held([victim], acknowledged, 120)
    assert "rebuilds from its peers" in victim.log_tail()
    wait_for(lambda: "this node votes again" in victim.log_tail(), 60, "the rebuild to end")
    assert list(victim.data_dir.glob("raft.journal.bad-*"))
