"""Committed writes through the REST API of a 3-node loopback cluster, against raw pysyncobj.

Prints, in one run: REST writes/s and p50/p99 latency with 1 and 32 concurrent clients
(at the leader and at a follower), raw pysyncobj writes/s in the same Raft configuration,
and failover times (SIGKILL of the leader to the first committed write) over 10 kills.
By default everything runs twice, with the Raft transport encrypted (pysyncobj's password,
as CLUSTER_SECRET sets it) and without (bench/plain_node.py), to show what encryption costs.

    .venv/bin/python bench/raft_write.py [--duration 5] [--kills 10] [--password both|on|off]
                                         [--without-opcua]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.raw_node import RawStore, raw_conf  # noqa: E402
from mes.cluster_secret import raft_password  # noqa: E402
from mes.raft.node import RaftTuning  # noqa: E402
from mes.state.ops import Op  # noqa: E402
from tests.auth import ADMIN_TOKEN  # noqa: E402
from tests.cluster import TEST_CLUSTER_SECRET, Cluster, ServerProcess  # noqa: E402
from tests.polling import wait_for  # noqa: E402
from tests.ports import free_port  # noqa: E402

SPOOLS = 50


@dataclass
class Run:
    """Latencies (seconds) of the writes that succeeded in `elapsed` seconds, and failures."""

    name: str
    latencies: list[float]
    elapsed: float
    failures: int

    def line(self) -> str:
        ordered = sorted(self.latencies)
        if not ordered:
            return f"{self.name:<44} no successful writes ({self.failures} failed)"
        p50 = ordered[len(ordered) // 2] * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        rate = len(ordered) / self.elapsed
        return (f"{self.name:<44} {rate:8.0f} writes/s   p50 {p50:6.2f} ms   p99 {p99:7.2f} ms"
                f"   ({len(ordered)} ok, {self.failures} failed)")

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost less than the server.

    (httpx's async pool used a whole core for about 200 requests/s here.)
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: dict[str, object]) -> int:
        """POST and return the status code, reading and discarding the body."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        assert self._reader is not None
        payload = json.dumps(body).encode()
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self._reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def rest_load(node: ServerProcess, clients: int, duration: float, tag: str) -> Run:
    """`clients` concurrent keep-alive clients each POSTing print jobs for `duration` s."""
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + duration

    async def one_client(c: int) -> None:
        nonlocal failures
        client = KeepAliveClient(node.http_port)
        n = 0
        try:
            while time.perf_counter() < stop_at:
                body = {"id": f"{tag}-{c}-{n}", "printer_id": "p", "filament_id": f"f{n % SPOOLS}",
                        "filepath": "bench.gcode", "print_weight_in_grams": 1}
                started = time.perf_counter()
                status = await client.post_json("/api/v1/print_jobs", body)
                if status == 201:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1
                n += 1
        finally:
            await client.close()

    began = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in range(clients)))
    elapsed = time.perf_counter() - began
    where = "leader" if node.cluster()["role"] == "leader" else "follower"
    return Run(f"REST  {clients:2d} client(s) at the {where}", latencies, elapsed, failures)


def raw_load(store: RawStore, threads: int, duration: float) -> Run:
    """`threads` threads each making synchronous replicated calls for `duration` seconds."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def worker(t: int) -> None:
        mine = []
        n = 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                store.put(f"{t}-{n}", n, sync=True, timeout=5)
                mine.append(time.perf_counter() - started)
            except Exception:
                failures[0] += 1
            n += 1
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return Run(f"raw pysyncobj {threads:2d} thread(s) on the leader", latencies,
               time.perf_counter() - began, failures[0])


def raw_baseline(duration: float, password: str | None) -> list[Run]:
    """A 3-node plain pysyncobj cluster: this process leads, two follower processes."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    secret = ["--password", password] if password else []
    followers = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "raw_node.py"), *secret,
                                   address, *[a for a in addresses if a != address]],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for address in addresses[1:]]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = RawStore(addresses[0], addresses[1:],
                             raw_conf(Path(tmp), RaftTuning(), password))
            wait_for(lambda: store._isLeader(), 20, "the raw node to lead")
            runs = [raw_load(store, 1, duration), raw_load(store, 32, duration)]
            store.destroy_synchronous()
        return runs
    finally:
        for process in followers:
            process.kill()
            process.wait()


def apply_alone(count: int = 3000) -> float:
    """Commands/s of the state machine by itself (job.create), no Raft, no HTTP."""
    from mes.state.machine import StateMachine

    machine = StateMachine()
    machine.apply({"op": Op.PRINTER_CREATE, "args": {"id": "p"}, "ts": 1.0, "rid": "p"})
    for i in range(SPOOLS):
        machine.apply({"op": Op.FILAMENT_CREATE, "ts": 1.0, "rid": f"s{i}", "args": {
            "id": f"f{i}", "type": "PLA", "color": "x", "total_weight_in_grams": 100_000}})
    began = time.perf_counter()
    for n in range(count):
        machine.apply({"op": Op.JOB_CREATE, "ts": 2.0, "rid": f"r{n}", "args": {
            "id": f"j{n}", "printer_id": "p", "filament_id": f"f{n % SPOOLS}",
            "filepath": "bench.gcode", "print_weight_in_grams": 1}})
    return count / (time.perf_counter() - began)


def journal_syncs_alone(count: int = 300) -> float:
    """Synced journal appends/s with one entry per sync: the disk's bound without group commit."""
    from mes.raft.journal import SyncedJournal

    with tempfile.TemporaryDirectory() as tmp:
        journal = SyncedJournal(str(Path(tmp) / "raft.journal"))
        began = time.perf_counter()
        for i in range(1, count + 1):
            journal.add(b"x" * 300, i, 1)
            journal.sync()
        rate = count / (time.perf_counter() - began)
        journal._destroy()
    return rate


def seed(node: ServerProcess) -> None:
    assert node.client.post("/printers", json={"id": "p"}).status_code == 201
    for i in range(SPOOLS):
        spool = {"id": f"f{i}", "type": "PLA", "color": "x", "total_weight_in_grams": 100_000}
        assert node.client.post("/filaments", json=spool).status_code == 201


def failovers(cluster: Cluster, kills: int) -> list[float]:
    """Seconds from SIGKILL of the leader to the first write committed by a survivor."""
    times = []
    for k in range(kills):
        leader = cluster.wait_leader()
        survivor = next(n for n in cluster.live() if n is not leader)
        body = {"id": f"fo-{k}", "printer_id": "p", "filament_id": "f0",
                "filepath": "x.gcode", "print_weight_in_grams": 1}
        leader.kill()
        killed = time.perf_counter()
        while True:
            try:
                response = survivor.client.post("/print_jobs", json=body, timeout=10,
                                                headers={"Idempotency-Key": f"fo-{k}"})
                if response.status_code == 201:
                    break
            except httpx.HTTPError:
                pass
        times.append(time.perf_counter() - killed)
        leader.start()
        wait_for(functools.partial(_caught_up, cluster, leader), 30,
                 "the restarted node to catch up")
    return times


def _caught_up(cluster: Cluster, node: ServerProcess) -> bool:
    view = node.cluster()
    leader = cluster.leader()
    return (leader is not None and all(n["reachable"] for n in view["nodes"])
            and view["applied_index"] >= leader.cluster()["commit_index"])


def rest_runs(encrypted: bool, duration: float, kills: int,
              opcua: bool = True) -> tuple[list[Run], list[float]]:
    """REST load at the leader (1 and 32 clients) and a follower (32), then failovers."""
    label = ("encrypted" if encrypted else "plain") + ("" if opcua else ", no OPC UA")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(3, Path(tmp), **({} if opcua else {"OPCUA_MODE": "off"}))
        if not encrypted:
            for node in cluster.nodes:
                node.command = [sys.executable, str(ROOT / "bench" / "plain_node.py")]
        try:
            cluster.start()
            leader = cluster.wait_leader()
            follower = next(n for n in cluster.live() if n is not leader)
            # Each node loads its OPC UA model in the background for seconds after it is
            # ready: measured before that, the load's CPU would count as the writes'.
            wait_for(lambda: all(opcua_built(n) for n in cluster.live()), 120,
                     "every node's OPC UA address space built")
            seed(leader)
            rest = []
            for node, clients in ((leader, 1), (leader, 32), (follower, 32)):
                run = asyncio.run(rest_load(node, clients, duration, f"{node.index}-{clients}"))
                run.name = f"{run.name} [{label}]"
                rest.append(run)
                print(run.line())
            times = failovers(cluster, kills)
        finally:
            cluster.stop()
    return rest, times


def opcua_built(node: ServerProcess) -> bool:
    """Whether the node's embedded OPC UA server has built its address space (or it has
    none)."""
    opcua = node.cluster().get("opcua")
    return opcua is None or bool(opcua["ready"])


def p50_ms(run: Run) -> float:
    return sorted(run.latencies)[len(run.latencies) // 2] * 1000 if run.latencies else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--kills", type=int, default=10, help="leader kills for failover")
    parser.add_argument("--without-opcua", action="store_true",
                        help="also run the REST loads with every node's OPC UA server off "
                             "(what the embedded server costs a write)")
    parser.add_argument("--password", choices=("both", "on", "off"), default="both",
                        help="Raft transport encrypted (on), not (off), or each in turn")
    args = parser.parse_args()
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.password]

    print("3-node loopback cluster, pysyncobj appendEntriesUseBatch=False, 2-core machine\n")
    raw: dict[bool, list[Run]] = {}
    for encrypted in modes:
        raw[encrypted] = raw_baseline(
            args.duration, raft_password(TEST_CLUSTER_SECRET) if encrypted else None)
        for run in raw[encrypted]:
            run.name = f"{run.name} [{'encrypted' if encrypted else 'plain'}]"
            print(run.line())
    alone = apply_alone()
    print(f"{'state machine apply alone (job.create)':<44} {alone:8.0f} commands/s"
          f"   ({1e6 / alone:.0f} us each; every node applies every command)")
    syncs = journal_syncs_alone()
    print(f"{'journal append + sync, one entry per sync':<44} {syncs:8.0f} syncs/s"
          f"   (REST writes/s above this come from group commit)")

    rest: dict[bool, list[Run]] = {}
    times: list[float] = []
    for encrypted in modes:
        # failovers once, on the cluster as it really runs (encrypted unless only plain)
        kills = args.kills if encrypted == modes[-1] else 0
        rest[encrypted], found = rest_runs(encrypted, args.duration, kills)
        times = times or found
    bare: list[Run] = []
    if args.without_opcua:
        bare, _ = rest_runs(modes[-1], args.duration, 0, opcua=False)

    for encrypted in modes:
        label = "encrypted" if encrypted else "plain"
        print(f"\n[{label}] REST 32 clients at the leader / raw 32 threads: "
              f"{rest[encrypted][1].rate / raw[encrypted][1].rate:.2f}   (goal >= 0.5)")
        print(f"[{label}] REST one-client p50: {p50_ms(rest[encrypted][0]):.2f} ms"
              f"   (goal < 3 ms)")
    if bare:
        print("\nwhat the embedded OPC UA servers cost (with -> without):")
        for with_it, without in zip(rest[modes[-1]], bare, strict=True):
            name = with_it.name.rsplit(" [", 1)[0]
            print(f"  {name:<44} writes/s {with_it.rate:7.0f} -> {without.rate:7.0f}"
                  f"   p50 {p50_ms(with_it):6.2f} -> {p50_ms(without):6.2f} ms")
    if len(modes) == 2:
        print("\ncost of encryption (encrypted vs plain):")
        pairs = [(raw[False][i], raw[True][i]) for i in range(2)]
        pairs += [(rest[False][i], rest[True][i]) for i in range(3)]
        for plain, secret in pairs:
            name = plain.name.removesuffix(" [plain]")
            print(f"  {name:<44} writes/s {plain.rate:7.0f} -> {secret.rate:7.0f}"
                  f" ({(secret.rate / plain.rate - 1) * 100:+5.1f} %)   p50 {p50_ms(plain):6.2f}"
                  f" -> {p50_ms(secret):6.2f} ms")
    if not times:
        return
    print(f"\nfailover over {len(times)} leader kills: min {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s"
          f"   (goals: median < 1 s, max < 2 s)")


if __name__ == "__main__":
    main()
