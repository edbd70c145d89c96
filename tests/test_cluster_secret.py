"""CLUSTER_SECRET: required for a cluster; Raft and the internal blob routes admit only nodes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.api.app import create_app
from mes.cluster_secret import blob_token, raft_password
from mes.config import ConfigError, Settings, load_settings
from mes.node import FarmNode
from tests.auth import admin_headers, bearer
from tests.cluster import TEST_CLUSTER_SECRET, Cluster, ServerProcess
from tests.polling import wait_for
from tests.ports import free_port
from tests.raft_stranger import STRANGER_TERM

ROOT = Path(__file__).resolve().parent.parent
SECRET = "a-secret-of-the-test-cluster-xyz"
GCODE = b"G28\nG1 X10 Y10\n" * 200


# --- configuration ----------------------------------------------------------------------


def test_server_with_peers_and_no_secret_exits_2_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFT_", "CLUSTER_"))}
    env.update(RAFT_SELF=f"127.0.0.1:{free_port()}", RAFT_PEERS=f"127.0.0.1:{free_port()}",
               HTTP_PORT=str(free_port()), HTTP_HOST="127.0.0.1", DATA_DIR=str(tmp_path / "d"))
    result = subprocess.run([sys.executable, "-m", "mes"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CLUSTER_SECRET" in lines[0] and "RAFT_PEERS" in lines[0]
    assert not (tmp_path / "d" / "raft.journal").exists()  # nothing started


def test_secret_rules(tmp_path: Path) -> None:
    base: dict[str, Any] = {"_env_file": None, "data_dir": tmp_path, "raft_self": "127.0.0.1:7001"}
    with pytest.raises(ConfigError, match="CLUSTER_SECRET"):
        load_settings(**base, raft_peers="127.0.0.1:7002")
    with pytest.raises(ConfigError, match="CLUSTER_SECRET: at least 16"):
        load_settings(**base, raft_peers="127.0.0.1:7002", cluster_secret="x" * 15)
    assert load_settings(**base, raft_peers="127.0.0.1:7002", cluster_secret="x" * 16).peers
    # a single node (no peers, or only itself) needs none
    assert load_settings(**base, raft_peers="127.0.0.1:7001").cluster_secret == ""
    assert load_settings(**base).cluster_secret == ""


def test_a_node_never_joins_peers_unencrypted(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                        raft_self="127.0.0.1:7001", raft_peers="127.0.0.1:7002")
    with pytest.raises(ConfigError, match="CLUSTER_SECRET"):
        FarmNode(settings)
    assert not (tmp_path / "raft.journal").exists()


def test_each_channel_gets_its_own_key() -> None:
    raft, blobs = raft_password(SECRET), blob_token(SECRET)
    assert raft is not None and blobs is not None
    assert len({raft, blobs, SECRET}) == 3
    assert SECRET not in raft and SECRET not in blobs
    assert raft == raft_password(SECRET) and raft != raft_password(SECRET + "!")
    assert raft_password("") is None and blob_token("") is None


def _single(tmp_path: Path, secret: str) -> FarmNode:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                        upload_path=tmp_path / "upload", raft_self=f"127.0.0.1:{free_port()}",
                        cluster_secret=secret)
    return FarmNode(settings)


def test_a_single_node_encrypts_raft_with_its_own_secret_without_one(tmp_path: Path) -> None:
    from mes.cluster_secret import INSTALL_SECRET_FILE

    plain = _single(tmp_path / "plain", "")
    key = tmp_path / "plain" / "data" / INSTALL_SECRET_FILE
    try:
        own = key.read_text().strip()
        assert len(own) >= 32 and key.stat().st_mode & 0o777 == 0o600
        assert plain.raft.conf.password == raft_password(own)
        assert plain.raft.encryptor is not None
    finally:
        plain.close()
    again = _single(tmp_path / "plain", "")  # the same key after a restart
    try:
        assert again.raft.conf.password == raft_password(own)
    finally:
        again.close()
    secret = _single(tmp_path / "secret", SECRET)
    try:
        assert secret.raft.conf.password == raft_password(SECRET)
        assert secret.raft.encryptor is not None
    finally:
        secret.close()


# --- internal blob routes, in process --------------------------------------------------


@pytest.fixture
def secret_node(tmp_path: Path) -> Iterator[FarmNode]:
    farm = _single(tmp_path, SECRET)
    yield farm
    farm.close()


@pytest.fixture
async def raw_api(secret_node: FarmNode) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no credentials of its own."""
    transport = httpx.ASGITransport(app=create_app(secret_node))
    async with httpx.AsyncClient(transport=transport, base_url="http://mes/api/v1") as client:
        yield client


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


STRANGER_HEADERS = [
    {},
    bearer("wrong"),
    bearer(blob_token("another-cluster-secret-123") or ""),
    bearer(SECRET),  # the secret itself is not the token
    admin_headers(),  # a user, even the admin, is not a node
    {"Authorization": f"Basic {blob_token(SECRET)}"},
]


@pytest.mark.parametrize("headers", STRANGER_HEADERS)
async def test_internal_blob_routes_refuse_callers_without_the_secret(
        raw_api: httpx.AsyncClient, secret_node: FarmNode, headers: dict[str, str]) -> None:
    sha = hashlib.sha256(GCODE).hexdigest()
    _refused(await raw_api.put(f"/internal/blobs/{sha}", content=GCODE, headers=headers))
    assert not secret_node.blobs.has(sha)  # a refused copy stores nothing
    _refused(await raw_api.get(f"/internal/blobs/{sha}", headers=headers))
    # even for a blob the node holds
    token = bearer(blob_token(SECRET) or "")
    assert (await raw_api.put(f"/internal/blobs/{sha}", content=GCODE,
                              headers=token)).status_code == 204
    _refused(await raw_api.get(f"/internal/blobs/{sha}", headers=headers))


async def test_internal_blob_routes_accept_the_cluster_token(
        raw_api: httpx.AsyncClient, secret_node: FarmNode) -> None:
    sha = hashlib.sha256(GCODE).hexdigest()
    token = bearer(blob_token(SECRET) or "")
    assert (await raw_api.put(f"/internal/blobs/{sha}", content=GCODE,
                              headers=token)).status_code == 204
    assert secret_node.blobs.read(sha) == GCODE
    got = await raw_api.get(f"/internal/blobs/{sha}", headers=token)
    assert got.status_code == 200 and got.content == GCODE


async def test_without_a_secret_internal_blob_routes_refuse_everyone(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    sha = hashlib.sha256(GCODE).hexdigest()
    for headers in ({}, bearer(blob_token(SECRET) or ""), bearer("")):
        _refused(await api.put(f"/api/v1/internal/blobs/{sha}", content=GCODE,
                               headers=headers))
        _refused(await api.get(f"/api/v1/internal/blobs/{sha}", headers=headers))
    assert not node.blobs.has(sha)


# --- a real cluster --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(3, tmp_path_factory.mktemp("secret-cluster"), CLUSTER_SECRET=SECRET)
    try:
        started.start()
        wait_for(lambda: all(n["http_url"] for n in started.nodes[0].cluster()["nodes"]), 60,
                 "every node to announce its URL")
        yield started
    finally:
        started.stop()


class Writer:
    """Creates filaments one after another, counting what committed.

    A write whose outcome is unknown (503 after the write timeout) is sent again with its
    Idempotency-Key, as a client does, for up to PATIENCE seconds: a commit slowed by a
    loaded machine is not a failure, a write that never commits (or is refused) is."""

    PATIENCE = 60.0

    def __init__(self, node: ServerProcess, tag: str) -> None:
        self.node, self.tag = node, tag
        self.ok: list[str] = []
        self.failed: list[str] = []
        self.resent = 0

    def write(self) -> None:
        spool_id = f"{self.tag}-{len(self.ok) + len(self.failed)}"
        spool = {"id": spool_id, "type": "PLA", "color": "red",
                 "total_weight_in_grams": 1000, "remaining_weight_in_grams": 1000}
        deadline = time.monotonic() + self.PATIENCE
        while True:
            response = self.node.client.post("/filaments", json=spool,
                                             headers={"Idempotency-Key": spool_id})
            if response.status_code != 503 or time.monotonic() >= deadline:
                break
            self.resent += 1
        (self.ok if response.status_code == 201 else self.failed).append(spool_id)

    def write_for(self, seconds: float, also: Any = None, at_least: int = 0) -> None:
        """Keep writing for `seconds` (a load duration, not a wait) and at least `at_least`
        writes in all, calling `also` between."""
        until = time.monotonic() + seconds
        while time.monotonic() < until or len(self.ok) + len(self.failed) < at_least:
            self.write()
            if also is not None:
                also()


def _terms(cluster: Cluster) -> set[int]:
    return {n.cluster()["term"] for n in cluster.nodes}


def _all_hold(cluster: Cluster, ids: list[str]) -> bool:
    return all(set(ids) <= {f["id"] for f in n.every("/filaments")} for n in cluster.nodes)


@pytest.mark.cluster
def test_cluster_with_the_secret_commits_and_copies_files(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    writer = Writer(follower, "plain")
    for _ in range(5):
        writer.write()
    assert writer.ok and not writer.failed
    wait_for(lambda: _all_hold(cluster, writer.ok), 60, "every node to hold the spools")

    response = follower.client.post("/files", files={"file": ("part.gcode", GCODE)})
    assert response.status_code == 201, response.text
    sha = response.json()["id"]
    other = next(n for n in cluster.nodes if n is not follower)
    # read-your-writes: `other` may be a follower that has not applied the record yet
    download = other.client.get(f"/files/{sha}",
                                headers={"X-Min-Raft-Index": response.headers["X-Raft-Index"]})
    assert download.status_code == 200 and download.content == GCODE
    # a majority held it before the upload was answered, the third gets it in the background
    wait_for(lambda: all((n.data_dir / "upload" / sha[:2] / sha).exists()
                         for n in cluster.nodes), 60, "every node to hold the file")

    # the real routes between nodes: the secret's token only
    with httpx.Client(base_url=f"http://127.0.0.1:{other.http_port}/api/v1") as raw:
        _refused(raw.get(f"/internal/blobs/{sha}"))
        _refused(raw.get(f"/internal/blobs/{sha}", headers=admin_headers()))
        _refused(raw.get(f"/internal/blobs/{sha}",
                         headers=bearer(blob_token(TEST_CLUSTER_SECRET) or "")))
        new = b"G28\nM84\n"
        new_sha = hashlib.sha256(new).hexdigest()
        _refused(raw.put(f"/internal/blobs/{new_sha}", content=new, headers=admin_headers()))
        assert not (other.data_dir / "upload" / new_sha[:2] / new_sha).exists()
        got = raw.get(f"/internal/blobs/{sha}", headers=bearer(blob_token(SECRET) or ""))
        assert got.status_code == 200 and got.content == GCODE
    cluster.assert_same_state()


def _address_above(addresses: list[str]) -> str:
    """A free loopback Raft address that sorts after `addresses` (pysyncobj connects from
    the higher address to the lower: a stranger above every node dials all of them)."""
    highest = max(addresses)
    return wait_for(lambda: (a if (a := f"127.0.0.1:{free_port()}") > highest else None), 10,
                    "a free port above the nodes'", interval=0)


@pytest.fixture
def strangers(cluster: Cluster) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    nodes = sorted(n.raft_address for n in cluster.nodes)
    impersonated = nodes[-1]  # the highest node address dials the two others
    wrong = "wrong-secret-of-someone-else-123"
    specs = [
        {"name": "wrong-password", "self": _address_above(nodes), "bind": None,
         "partners": nodes, "password": raft_password(wrong)},
        {"name": "no-password", "self": _address_above(nodes), "bind": None,
         "partners": nodes, "password": None},
        {"name": "raw-secret", "self": _address_above(nodes), "bind": None,
         "partners": nodes, "password": SECRET},  # the secret, not its derived password
        {"name": "impersonator-no-password", "self": impersonated,
         "bind": f"127.0.0.1:{free_port()}", "partners": nodes[:-1], "password": None},
        {"name": "impersonator-wrong-password", "self": impersonated,
         "bind": f"127.0.0.1:{free_port()}", "partners": nodes[:-1],
         "password": raft_password(wrong)},
        {"name": "read-only-no-password", "self": None, "bind": None, "partners": nodes,
         "password": None},
        {"name": "read-only-wrong-password", "self": None, "bind": None, "partners": nodes,
         "password": raft_password(wrong)},
    ]
    process = subprocess.Popen([sys.executable, "-m", "tests.raft_stranger", json.dumps(specs)],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield process, [s["name"] for s in specs]  # type: ignore[misc]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _ask(process: subprocess.Popen[str], command: str) -> dict[str, dict[str, Any]]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(command + "\n")
    process.stdin.flush()
    answer: dict[str, dict[str, Any]] = json.loads(process.stdout.readline())
    return answer


@pytest.mark.cluster
def test_strangers_on_the_raft_ports_change_nothing(
        cluster: Cluster, strangers: tuple[subprocess.Popen[str], list[str]]) -> None:
    process, names = strangers
    leader = cluster.wait_leader()
    term = leader.cluster()["term"]
    assert _terms(cluster) == {term}
    writer = Writer(leader, "stranger")

    # every stranger dials the nodes, is dropped and dials again, while writes go on
    def dropped_twice() -> bool:
        writer.write()
        report = _ask(process, "status")
        return all(r["connected"] >= 2 and r["dropped"] >= 2 for r in report.values())

    wait_for(dropped_twice, 120, "every stranger to be dropped twice by the nodes", interval=0)
    # a few more seconds of writing while strangers keep dialling with ever higher terms
    writer.write_for(3.0, at_least=10)
    final = _ask(process, "stop")
    assert process.wait(30) == 0

    for name in names:
        seen = final[name]
        assert seen["received"] == 0, (name, seen)  # not one message from the cluster
        assert seen["applied"] == 0 and seen["log_len"] == 1, (name, seen)
        assert seen["commit_idx"] <= 1 and seen["last_applied"] <= 1, (name, seen)
        assert seen["leader"] is None, (name, seen)
    # the strangers campaigned with higher terms than the cluster's (from STRANGER_TERM) ...
    campaigned = [n for n in names if final[n]["term"] > STRANGER_TERM]
    assert campaigned and max(final[n]["term"] for n in names) > term, final
    # ... and the cluster never heard them: no node ever took a stranger's term (a node that
    # took in one message of theirs would have), and every write committed. Its own term may
    # move on a loaded machine (a late heartbeat, an election): that is shown, not asserted.
    terms = _terms(cluster)
    assert max(terms) < STRANGER_TERM, (terms, final)
    print(f"\ncluster terms {term} -> {sorted(terms)}; {writer.resent} writes sent again")
    assert cluster.wait_leader() is not None
    assert len(writer.ok) >= 10 and not writer.failed, writer.failed[:5]
    wait_for(lambda: _all_hold(cluster, writer.ok), 60, "every node to hold every spool")
    cluster.assert_same_state()


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.mark.cluster
def test_garbage_on_a_raft_port_changes_nothing(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    term = leader.cluster()["term"]
    writer = Writer(leader, "garbage")
    hello = zlib.compress(pickle.dumps(leader.raft_address), 3)
    frames = [
        struct.pack("i", 65536) + os.urandom(65536),  # noise
        struct.pack("i", -5) + os.urandom(100),  # a negative length
        struct.pack("i", 40) + os.urandom(40),  # a frame of the right shape, not a token
        struct.pack("i", len(hello)) + hello,  # a plaintext hello, as without a password
        b"\x00" * 4 + b"\xff" * 4096,
    ]
    dropped: list[socket.socket] = []
    stalled: list[socket.socket] = []
    try:
        for node in cluster.nodes:
            host, port = node.raft_address.rsplit(":", 1)
            for frame in frames:
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(frame)
                sock.setblocking(False)
                dropped.append(sock)
            # a frame announcing 2 GB that never comes: held open, must not block the node
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(struct.pack("i", 2**31 - 1) + b"x" * 100)
            stalled.append(sock)
            writer.write()
        wait_for(lambda: all(_closed_by_peer(s) for s in dropped), 60,
                 "every node to drop every garbage connection")
        writer.write_for(2.0, at_least=10)
    finally:
        for sock in dropped + stalled:
            sock.close()
    assert len(writer.ok) >= 10 and not writer.failed, writer.failed[:5]
    assert _terms(cluster) == {term}
    wait_for(lambda: _all_hold(cluster, writer.ok), 60, "every node to hold every spool")
    cluster.assert_same_state()
