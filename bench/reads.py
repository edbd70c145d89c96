"""Reads beside writes: does paging through every job stall Raft, `/health` or the writers?

Starts a loopback cluster of real server processes, preloads print jobs through the REST
API (every one through Raft), then runs two phases of the same length against the leader:
32 writers alone, and 32 writers with one client paging through all jobs in a loop with
`GET /print_jobs?limit=100` (following `X-Next-Cursor`; a server without pages answers the
whole list each time). A prober asks `/health` every 20 ms throughout. Prints per phase:
writes/s, the page p50/p99, `/health` p50/p99, and elections (the rise of the highest term).

    .venv/bin/python bench/reads.py [--jobs 100000] [--nodes 3] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.auth import ADMIN_TOKEN  # noqa: E402
from tests.cluster import Cluster, ServerProcess  # noqa: E402

SPOOLS = 50
API = "/api/v1"


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost less than the server."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: dict[str, object] | None = None
                      ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; its status, lower-case headers and body."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        assert self._reader is not None
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {len(payload)}\r\n")
        if body is not None:
            head += "Content-Type: application/json\r\n"
        self._writer.write(head.encode() + b"\r\n" + payload)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        data = await self._reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, data

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclass
class Latencies:
    """Durations in seconds of one kind of request, and how many failed."""

    values: list[float] = field(default_factory=list)
    failures: int = 0

    def pct(self, q: float) -> float:
        ordered = sorted(self.values)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    elapsed: float = 0.0
    writes: Latencies = field(default_factory=Latencies)
    pages: Latencies = field(default_factory=Latencies)
    health: Latencies = field(default_factory=Latencies)
    page_bytes: int = 0
    rows_paged: int = 0
    laps: int = 0
    elections: int = 0

    def report(self) -> str:
        lines = [f"{self.name}:",
                 f"  writes      {len(self.writes.values) / self.elapsed:8.1f} /s"
                 f"   p50 {self.writes.pct(0.5):8.1f} ms   p99 {self.writes.pct(0.99):8.1f} ms"
                 f"   ({self.writes.failures} failed)",
                 f"  /health     p50 {self.health.pct(0.5):8.1f} ms   p99"
                 f" {self.health.pct(0.99):8.1f} ms   max {self.health.pct(1.0):8.1f} ms"
                 f"   ({len(self.health.values)} probes, {self.health.failures} failed)",
                 f"  elections   {self.elections}"]
        if self.pages.values:
            lines.append(
                f"  page        p50 {self.pages.pct(0.5):8.1f} ms   p99"
                f" {self.pages.pct(0.99):8.1f} ms   ({len(self.pages.values)} pages,"
                f" {self.rows_paged} rows, {self.laps} full laps,"
                f" {self.page_bytes / max(1, len(self.pages.values)) / 1024:.0f} KiB/page)")
        return "\n".join(lines)


def seed(node: ServerProcess) -> None:
    assert node.client.post("/printers", json={"id": "p"}).status_code == 201
    for i in range(SPOOLS):
        spool = {"id": f"f{i}", "type": "PLA", "color": "x", "total_weight_in_grams": 100_000}
        assert node.client.post("/filaments", json=spool).status_code == 201


def job_body(tag: str, n: int) -> dict[str, object]:
    return {"id": f"{tag}-{n}", "printer_id": "p", "filament_id": f"f{n % SPOOLS}",
            "filepath": "bench.gcode", "print_weight_in_grams": 1}


async def preload(node: ServerProcess, count: int, clients: int) -> float:
    """Create `count` jobs with `clients` concurrent writers; jobs/s."""
    next_n = 0
    began = time.perf_counter()

    async def one_client() -> None:
        nonlocal next_n
        conn = Connection(node.http_port)
        try:
            while next_n < count:
                n = next_n
                next_n += 1
                while (await conn.request("POST", f"{API}/print_jobs",
                                          job_body("pre", n)))[0] != 201:
                    await asyncio.sleep(0.1)
                if n % 10_000 == 0 and n:
                    print(f"  preloaded {n} jobs ({n / (time.perf_counter() - began):.0f}/s)",
                          flush=True)
        finally:
            await conn.close()

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return count / (time.perf_counter() - began)


async def writer(node: ServerProcess, tag: str, stop_at: float, out: Latencies) -> None:
    conn = Connection(node.http_port)
    n = 0
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status, _, _ = await conn.request("POST", f"{API}/print_jobs", job_body(tag, n))
            if status == 201:
                out.values.append(time.perf_counter() - started)
            else:
                out.failures += 1
            n += 1
    finally:
        await conn.close()


async def pager(node: ServerProcess, stop_at: float, phase: Phase) -> None:
    conn = Connection(node.http_port)
    cursor: str | None = None
    try:
        while time.perf_counter() < stop_at:
            path = f"{API}/print_jobs?limit=100" + (f"&cursor={cursor}" if cursor else "")
            started = time.perf_counter()
            status, headers, data = await conn.request("GET", path)
            if status != 200:
                phase.pages.failures += 1
                continue
            phase.pages.values.append(time.perf_counter() - started)
            phase.page_bytes += len(data)
            phase.rows_paged += data.count(b'"id"')
            cursor = headers.get("x-next-cursor")
            if cursor is None:
                phase.laps += 1
    finally:
        await conn.close()


async def prober(node: ServerProcess, stop_at: float, out: Latencies) -> None:
    conn = Connection(node.http_port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                status, _, _ = await asyncio.wait_for(
                    conn.request("GET", f"{API}/health"), 30)
            except TimeoutError:
                status = 0
                await conn.close()
            if status == 200:
                out.values.append(time.perf_counter() - started)
            else:
                out.failures += 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def highest_term(cluster: Cluster) -> int:
    """The highest term any live node reports."""
    terms = []
    for node in cluster.live():
        conn = Connection(node.http_port)
        try:
            status, _, data = await asyncio.wait_for(conn.request("GET", f"{API}/cluster"), 30)
            if status == 200:
                terms.append(int(json.loads(data)["term"]))
        except (OSError, TimeoutError, ValueError, KeyError):
            pass
        finally:
            await conn.close()
    return max(terms, default=0)


async def run_phase(cluster: Cluster, node: ServerProcess, name: str, tag: str,
                    duration: float, writers: int, reading: bool) -> Phase:
    phase = Phase(name)
    first_term = await highest_term(cluster)
    began = time.perf_counter()
    stop_at = began + duration
    tasks = [writer(node, f"{tag}{w}", stop_at, phase.writes) for w in range(writers)]
    tasks.append(prober(node, stop_at, phase.health))
    if reading:
        tasks.append(pager(node, stop_at, phase))
    await asyncio.gather(*tasks)
    phase.elapsed = time.perf_counter() - began
    phase.elections = await highest_term(cluster) - first_term
    return phase


async def bench(args: argparse.Namespace, cluster: Cluster) -> None:
    leader = cluster.wait_leader(60)
    seed(leader)
    rate = await preload(leader, args.jobs, args.preload_clients)
    print(f"preloaded {args.jobs} jobs at {rate:.0f} jobs/s", flush=True)
    leader = cluster.wait_leader(60)
    for tag, name, reading in (("a", "writers alone", False),
                               ("b", "writers + one client paging", True)):
        phase = await run_phase(cluster, leader, name, tag, args.duration, args.writers, reading)
        print(phase.report(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs preloaded")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--writers", type=int, default=32, help="concurrent writers")
    parser.add_argument("--preload-clients", type=int, default=32)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of every node, e.g. RAFT_SNAPSHOT_ENTRIES=...")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    print(f"{args.nodes}-node loopback cluster, {args.jobs} jobs, {args.writers} writers,"
          f" {args.duration:.0f} s per phase, env {env or 'default'}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(args.nodes, Path(tmp), **env)
        try:
            cluster.start()
            asyncio.run(bench(args, cluster))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
