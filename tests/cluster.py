"""Real server processes on loopback for cluster tests; every process is stopped by its test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pysyncobj.utility import TcpUtility

from mes.cluster_secret import raft_password
from tests.auth import ADMIN_TOKEN, admin_headers
from tests.polling import wait_for
from tests.ports import free_port

T = TypeVar("T")

# Every node of a test cluster shares this CLUSTER_SECRET unless the test passes another.
TEST_CLUSTER_SECRET = "mes-test-cluster-secret-0123456789"

# Deadlines bound what must eventually happen (a node answers, a leader is elected, a node is
# ready): they detect "never", not "slowly". A 2-core machine at load average 30 gives a node
# a few percent of a core: starting one (interpreter, imports, Raft, journal replay) then
# takes tens of seconds, and a probe request can take seconds. A probe slower than
# PROBE_TIMEOUT only counts as "not yet" within the deadline.
START_SECONDS = 120.0
READY_SECONDS = 90.0
LEADER_SECONDS = 60.0
PROBE_TIMEOUT = 5.0


class ServerProcess:
    """One `server` process with its own ports and DATA_DIR."""

    def __init__(self, index: int, base: Path, extra_env: dict[str, str]) -> None:
        self.index = index
        self.http_port = free_port()
        self.raft_address = f"127.0.0.1:{free_port()}"
        self.opcua_url = f"opc.tcp://127.0.0.1:{free_port()}/mes/"
        self.data_dir = base / f"node{index}"
        self.log_path = base / f"node{index}.log"
        self.extra_env = extra_env
        self.peers: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        # What runs the node (a benchmark may wrap it).
        self.command = [sys.executable, "-m", "mes"]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}/api/v1",
                                   timeout=15.0, headers=admin_headers())

    def start(self) -> None:
        env = {**os.environ,
               "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(self.http_port),
               "RAFT_SELF": self.raft_address, "RAFT_PEERS": ",".join(self.peers),
               "OPCUA_ENDPOINT": self.opcua_url,
               "DATA_DIR": str(self.data_dir), "UPLOAD_PATH": str(self.data_dir / "upload"),
               "LOG_LEVEL": "WARNING", "MES_ADMIN_TOKEN": ADMIN_TOKEN,
               "ALLOW_LOCAL_ADDRESSES": "true", **self.extra_env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=self.data_dir.parent)
        log.close()
        self.wait_answering(f"node {self.index} to answer")

    def wait_answering(self, what: str) -> None:
        """Wait until the process just started answers; if it never does (or Ctrl-C comes),
        stop it before the error goes on: a test that called start() outside its try/finally
        would otherwise leave it running."""
        try:
            wait_for(self.answering, START_SECONDS, what)
        except BaseException:
            self.stop()
            raise

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answering(self) -> bool:
        """Live: the process answers and its Raft thread runs (ready or not)."""
        if not self.alive:
            raise AssertionError(f"node {self.index} exited: {self.log_tail()}")
        return self.client.get("/health/live", timeout=PROBE_TIMEOUT).status_code == 200

    def healthy(self) -> bool:
        """Ready: a leader is known, this node has caught up and it applies."""
        if not self.alive:
            raise AssertionError(f"node {self.index} exited: {self.log_tail()}")
        return self.client.get("/health", timeout=PROBE_TIMEOUT).status_code == 200

    def admin_ready(self) -> bool:
        """The admin's token works: the first leader committed the admin (after /health)."""
        return self.healthy() and self.client.get("/users",
                                                  timeout=PROBE_TIMEOUT).status_code == 200

    def opcua_ready(self) -> bool:
        """Whether the node's embedded OPC UA server has built its address space."""
        return bool((self.cluster().get("opcua") or {}).get("ready"))

    def digest(self) -> tuple[int, str]:
        """This node's applied index and the digest of its state at that index."""
        response = self.client.get("/cluster/digest", timeout=10.0)
        response.raise_for_status()
        data = response.json()
        return int(data["applied_index"]), str(data["digest"])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            except BaseException:  # Ctrl-C while it shuts down: it must not outlive the run
                self.process.kill()
                self.process.wait(10)
                raise

    def cluster(self) -> dict[str, Any]:
        response = self.client.get("/cluster", timeout=PROBE_TIMEOUT)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def every(self, path: str, timeout: float = 15.0,
              headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every row of a paged list, following its next cursor to the last page."""
        rows: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "1000"}
        while True:
            response = self.client.get(path, params=params, timeout=timeout, headers=headers)
            response.raise_for_status()
            rows.extend(response.json())
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor:
                return rows
            params = {"limit": "1000", "cursor": cursor}

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


class Cluster:
    """N server processes that know each other.

    A cluster of more than one node shares TEST_CLUSTER_SECRET unless `env` names another
    CLUSTER_SECRET (an empty one leaves it unset, and the nodes refuse to start).
    """

    def __init__(self, size: int, base: Path, **env: str) -> None:
        base.mkdir(parents=True, exist_ok=True)
        if size > 1:
            env = {"CLUSTER_SECRET": TEST_CLUSTER_SECRET, **env}
        self.secret = env.get("CLUSTER_SECRET", "")
        self.nodes = [ServerProcess(i, base, env) for i in range(size)]
        for node in self.nodes:
            node.peers = [n.raft_address for n in self.nodes if n is not node]

    def start(self) -> Cluster:
        """Start every node and wait until all are ready. If that fails (or Ctrl-C comes),
        every node is stopped before the error goes on: tests and fixtures often call start()
        before their try/finally or yield, which then never stops what it had started."""
        try:
            for node in self.nodes:
                node.start()
            self.wait_leader()
            for node in self.nodes:
                wait_for(node.healthy, READY_SECONDS, f"node {node.index} to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def live(self) -> list[ServerProcess]:
        return [n for n in self.nodes if n.alive]

    def leader(self) -> ServerProcess | None:
        """The live node that all live nodes agree is leader, if any."""
        views = [n.cluster() for n in self.live()]
        leaders = {v["leader"] for v in views}
        if len(leaders) != 1 or None in leaders:
            return None
        address = leaders.pop()
        return next((n for n in self.live() if n.raft_address == address), None)

    def wait_leader(self, timeout: float = LEADER_SECONDS) -> ServerProcess:
        return wait_for(self.leader, timeout, "an agreed leader")

    def followers(self) -> list[ServerProcess]:
        leader = self.wait_leader()
        return [n for n in self.live() if n is not leader]

    def assert_same_state(self, timeout: float = 60.0) -> int:
        """Wait until every live node has reported a digest at one same applied index, and
        fail at once if two nodes ever report different digests at the same index.

        Returns the applied index at which all live nodes were compared.
        """
        nodes = self.live()
        seen: dict[int, dict[int, str]] = {}  # applied index -> node index -> digest

        def compare() -> int | None:
            for node in nodes:
                index, digest = node.digest()
                at_index = seen.setdefault(index, {})
                at_index[node.index] = digest
                if len(set(at_index.values())) > 1:
                    raise AssertionError(f"nodes diverged at applied index {index}: {at_index}")
            common = [i for i, by_node in seen.items() if len(by_node) == len(nodes)]
            return max(common) if common else None

        return wait_for(compare, timeout, "every live node to report the same applied index")

    def stop(self) -> None:
        try:
            for node in self.nodes:
                node.stop()
        finally:
            # A stop that raised (a second Ctrl-C) leaves none of the others running.
            for node in self.nodes:
                if node.alive:
                    node.kill()
                node.client.close()


# How long a write is sent again while its outcome is unknown: a bound on "never commits".
PATIENCE = 60.0


def post_acknowledged(node: ServerProcess, path: str, body: dict[str, Any], key: str,
                      patience: float = PATIENCE) -> httpx.Response | None:
    """POST with an Idempotency-Key, sent again with that key while its outcome is unknown
    (no answer, or 502/503/504: no leader committed it within the write timeout), as a
    client does; the first other answer, or None after `patience` seconds. A commit slower
    than the write timeout (a loaded machine, an election) is not a failure; a refusal is."""
    deadline = time.monotonic() + patience
    while True:
        try:
            response = node.client.post(path, json=body, headers={"Idempotency-Key": key})
            if response.status_code not in (502, 503, 504):
                return response
        except httpx.HTTPError:
            if not node.alive:
                return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


class Writers:
    """Threads that write jobs to some nodes until stopped; remembers what was acknowledged."""

    def __init__(self, nodes: list[ServerProcess], prefix: str) -> None:
        self.acknowledged: set[str] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(node, f"{prefix}{i}-"))
                         for i, node in enumerate(nodes)]

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, node: ServerProcess, prefix: str) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}/api/v1",
                          timeout=5.0, headers=admin_headers()) as client:
            count = 0
            while not self._stop.is_set():
                job_id = f"{prefix}{count}"
                count += 1
                body = {"id": job_id, "printer_id": "p", "filament_id": "f",
                        "filepath": "x.gcode", "print_weight_in_grams": 1}
                try:
                    response = client.post("/print_jobs", json=body,
                                           headers={"Idempotency-Key": job_id})
                except httpx.HTTPError:
                    continue
                if response.status_code == 201:
                    self.acknowledged.add(job_id)


# The nodes' Raft transport is encrypted with the test cluster's secret.
RAFT_PASSWORD = raft_password(TEST_CLUSTER_SECRET)


def raft_utility() -> TcpUtility:
    """pysyncobj's admin client, speaking the cluster's encrypted transport."""
    return TcpUtility(password=RAFT_PASSWORD, timeout=2.0)


def make_leader(cluster: Cluster, target: ServerProcess) -> None:
    """Hand leadership to `target` (pysyncobj's TimeoutNow through its admin port)."""
    def leads() -> bool:
        leader = cluster.wait_leader()
        if leader is target:
            return True
        with contextlib.suppress(Exception):
            raft_utility().executeCommand(leader.raft_address,
                                          ["transfer", target.raft_address])
        return False

    wait_for(leads, 60, f"node {target.index} to lead", interval=0.5)
