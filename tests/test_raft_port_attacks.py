"""The Raft port of a cluster under writes, attacked by anyone who can reach it: a frame
announcing 2 GiB followed by junk, a flood of junk at the leader, hundreds of idle
connections and a burst of a thousand. No term change, no lease lapse, commits continue."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mes.raft.transport import UNPROVEN_PER_SOURCE, UNPROVEN_SECONDS
from tests.cluster import Cluster, ServerProcess
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

MIB = 1 << 20


def address(node: ServerProcess) -> tuple[str, int]:
    host, port = node.raft_address.rsplit(":", 1)
    return host, int(port)


class Writes:
    """A thread that keeps committing jobs through `node` and counts acknowledgements."""

    def __init__(self, node: ServerProcess) -> None:
        self.node = node
        self.acknowledged: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            job_id = f"w{n}"
            body = {"id": job_id, "printer_id": "p", "filament_id": "f",
                    "filepath": f"{job_id}.gcode", "print_weight_in_grams": 1}
            try:
                answer = self.node.client.post("/print_jobs", json=body, timeout=10,
                                               headers={"Idempotency-Key": job_id})
                if answer.status_code == 201:
                    self.acknowledged.append(job_id)
                    n += 1
                else:
                    self.failed += 1
            except Exception:
                self.failed += 1
            time.sleep(0.02)  # a steady trickle, not a benchmark

    def progressed(self, since: int, by: int = 5) -> bool:
        return len(self.acknowledged) >= since + by


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(3, tmp_path / "cluster", NODE_LEASE_SECONDS="5",
                      NODE_LEASE_RENEW="1").start()
    try:
        leader = started.wait_leader()
        assert leader.client.post("/printers", json={"id": "p"}).status_code == 201
        assert leader.client.post("/filaments", json={
            "id": "f", "type": "PLA", "color": "red", "total_weight_in_grams": 100_000,
        }).status_code == 201
        yield started
    finally:
        started.stop()


def steady(cluster: Cluster) -> tuple[int, str]:
    """The term and leader every node agrees on."""
    views = [n.cluster() for n in cluster.nodes]
    assert len({v["term"] for v in views}) == 1, views
    assert len({v["leader"] for v in views}) == 1, views
    return views[0]["term"], views[0]["leader"]


def no_lease_lapsed(cluster: Cluster) -> None:
    for node in cluster.nodes:
        for entry in node.cluster()["nodes"]:
            lease = entry["lease"]
            assert lease is not None and not lease["expired"], entry


def open_fds(node: ServerProcess) -> int:
    assert node.process is not None
    return len(os.listdir(f"/proc/{node.process.pid}/fd"))


def flood(target: tuple[str, int], header: bytes, junk: int) -> tuple[int, float]:
    """Send `header` then up to `junk` bytes; how many were taken before the node closed
    the connection, and how long that took."""
    started = time.monotonic()
    sent = 0
    chunk = os.urandom(MIB)
    with socket.create_connection(target, timeout=10) as sock:
        try:
            sock.sendall(header)
            while sent < junk:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    return sent, time.monotonic() - started


def test_huge_frames_and_junk_are_cut_off_without_an_election(cluster: Cluster) -> None:
    term, leader_address = steady(cluster)
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    with Writes(leader) as writes:
        wait_for(lambda: writes.progressed(0), 120, "writes to commit")
        # 2 GiB announced, 64 MiB of junk sent at a follower
        before = len(writes.acknowledged)
        sent, _ = flood(address(follower), struct.pack("i", 2**31 - 1), 64 * MIB)
        assert sent < 16 * MIB, f"the follower took {sent} bytes of a 2 GiB frame"
        # 24 MiB of junk (random lengths) at the leader
        sent, _ = flood(address(leader), b"", 24 * MIB)
        assert sent < 16 * MIB, f"the leader took {sent} bytes of junk"
        wait_for(lambda: writes.progressed(before, by=20), 120, "commits to continue")
        follower_applies = follower.cluster()["applied_index"]
        wait_for(lambda: follower.cluster()["applied_index"] > follower_applies, 60,
                 "the attacked follower to keep applying")
    assert steady(cluster) == (term, leader_address)
    no_lease_lapsed(cluster)
    cluster.assert_same_state()


def test_idle_and_flooding_connections_are_closed_and_bounded(cluster: Cluster) -> None:
    term, leader_address = steady(cluster)
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    baseline = open_fds(follower)
    with Writes(leader) as writes:
        wait_for(lambda: writes.progressed(0), 120, "writes to commit")
        # 500 connections that never say anything
        idle = []
        for _ in range(500):
            try:
                idle.append(socket.create_connection(address(follower), timeout=5))
            except OSError:
                break
        assert len(idle) >= 100
        # the node holds few of them at once, and closes the rest within the deadline
        assert open_fds(follower) < baseline + 4 * UNPROVEN_PER_SOURCE + 20
        closed_at = time.monotonic()

        def all_closed() -> bool:
            for sock in idle:
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) != b"":
                        return False
                except TimeoutError:
                    return False
                except ConnectionError:
                    pass
            return True

        # Closed after UNPROVEN_SECONDS, not held: "never closed" fails here; how long it took
        # on this machine is a figure.
        wait_for(all_closed, UNPROVEN_SECONDS + 60, "the node to close every idle connection")
        print(f"\nevery idle connection closed {time.monotonic() - closed_at:.1f} s after "
              f"they were opened (deadline {UNPROVEN_SECONDS:g} s)")
        for sock in idle:
            sock.close()
        # a burst of a thousand (opened and dropped as fast as possible)
        before = len(writes.acknowledged)
        for _ in range(1000):
            with contextlib.suppress(OSError):
                socket.create_connection(address(follower), timeout=5).close()
        wait_for(lambda: writes.progressed(before, by=20), 120, "commits to continue")
        wait_for(lambda: open_fds(follower) < baseline + 20, 60,
                 "the follower to hold no more descriptors than before")
    assert steady(cluster) == (term, leader_address)
    no_lease_lapsed(cluster)
    cluster.assert_same_state()
