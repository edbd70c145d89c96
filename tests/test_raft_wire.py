"""Nothing from the network runs code: a pickled `os.system` frame sent to the Raft port of a
single node, of a cluster node and of release 0.1.0 (which ran it)."""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import zlib
from pathlib import Path

import pytest
from pysyncobj.node import TCPNode

from mes.raft import wire
from tests.cluster import Cluster, ServerProcess
from tests.polling import wait_for
from tests.release import ReleaseServerProcess, extract_release


class Exploit:
    """Unpickles into a call of os.system: the classic pickle payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def frame(marker: Path) -> bytes:
    """One pysyncobj frame (length, zlib of a pickle) whose unpickling touches `marker`."""
    body = zlib.compress(pickle.dumps(Exploit(f"touch {marker}"), 2), 3)
    return struct.pack("i", len(body)) + body


def send_frames(address: str, data: bytes, copies: int = 3) -> None:
    host, port = address.rsplit(":", 1)
    for _ in range(copies):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(data)
            sock.settimeout(2)
            with contextlib.suppress(TimeoutError, ConnectionError):
                sock.recv(1024)  # the node drops the connection (or stays silent)


def test_raft_data_with_any_callable_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(wire.RefusedGlobal, match=r"posix\.system"):
        wire.loads(pickle.dumps(Exploit(f"touch {marker}"), 2))
    assert not marker.exists()
    # what Raft data holds still loads: sets, bytes, node addresses
    plain = {"entries": [(b"\x01data", 2, 1), (b"", 3, 1)],
             "nodes": {TCPNode("127.0.0.1:7000")}, "frozen": frozenset({1}),
             "buffer": bytearray(b"x"), "empty": bytearray()}
    assert wire.loads(pickle.dumps(plain, 2)) == plain
    assert wire.loads(pickle.dumps(plain, pickle.HIGHEST_PROTOCOL)) == plain


def _survives(node: ServerProcess, marker: Path) -> None:
    send_frames(node.raft_address, frame(marker))
    wait_for(node.healthy, 60, "the node to stay ready")
    assert node.client.post("/filaments", json={
        "id": f"after-{node.index}", "type": "PLA", "color": "red", "total_weight_in_grams": 100,
    }).status_code == 201
    assert not marker.exists(), "a pickled frame ran a shell command on the node"


def test_a_pickled_frame_runs_nothing_on_a_single_node(tmp_path: Path) -> None:
    cluster = Cluster(1, tmp_path / "single").start()  # no CLUSTER_SECRET
    try:
        _survives(cluster.nodes[0], tmp_path / "ran-single")
    finally:
        cluster.stop()


@pytest.mark.cluster
def test_a_pickled_frame_runs_nothing_on_a_cluster_node(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path / "three").start()
    try:
        for node in cluster.nodes:
            _survives(node, tmp_path / f"ran-{node.index}")
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_release(tmp_path_factory)


def test_the_same_frame_ran_a_shell_on_release_0_1_0(tmp_path: Path, release: Path) -> None:
    """The reproduction, before the fix: proves the frame above is a working attack."""
    base = Cluster(1, tmp_path / "old")
    old = ReleaseServerProcess.adopt(base.nodes[0], release)
    marker = tmp_path / "ran-0.1.0"
    try:
        old.start()
        send_frames(old.raft_address, frame(marker), copies=1)
        wait_for(marker.exists, 60, "release 0.1.0 to run the pickled command")
    finally:
        old.stop()
        old.client.close()
