"""Big commands against elections and leases (issue 20, section 2): a 3-node loopback cluster
drives N floating mock printers while clients submit ORDERS orders of JOBS jobs each.

Before and after the submissions it reads every node's Raft term, the leader and each
node's lease, and afterwards it reads the nodes' logs for lapsed leases and the jobs that
ended Canceled (a lapse ends a mock print as lost). It prints the figures and exits with
status 1 when a term changed, the leader moved or a lease lapsed.

    .venv/bin/python bench/big_orders.py [--printers 1000] [--orders 200] [--jobs 100]
                                         [--clients 4] [--settle 20]

The whole set-up shares a 2-core machine: three nodes, their workers and mock printers,
and the clients.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster, ServerProcess, post_acknowledged  # noqa: E402
from tests.polling import wait_for  # noqa: E402

LAPSES = re.compile(r"lease lapsed|renewed no lease|lease renewal refused")
# Beds cleared by the farm so printers keep printing; short prints; INFO logs (the lapses).
NODE_SETTINGS = {"AUTO_CLEAR_BED": "true", "MOCK_PRINTER_JOB_TIME": "20", "LOG_LEVEL": "INFO"}


def register_printers(node: ServerProcess, count: int, clients: int) -> None:
    spool = {"id": "pla", "type": "PLA", "color": "black", "total_weight_in_grams": 100_000}
    created = post_acknowledged(node, "/filaments", spool, "bench-spool")
    assert created is not None and created.status_code == 201, created
    ids = iter(range(count))
    lock = threading.Lock()

    def one_client() -> None:
        while True:
            with lock:
                n = next(ids, None)
            if n is None:
                return
            body = {"id": f"m{n:04d}", "api": "Mock", "url": f"http://mock-printer{n}:5000",
                    "worker": True, "filament_id": "pla"}
            answer = post_acknowledged(node, "/printers", body, f"bench-printer-{n}")
            assert answer is not None and answer.status_code == 201, answer

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def upload(node: ServerProcess) -> str:
    """A small G-code file, stored once: the jobs print it (a job without one is a record)."""
    gcode = b"G28\n" + b"G1 X10 Y10 E1\n" * 50
    answer = node.client.post("/files", files={"file": ("part.gcode", gcode)})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def submit_orders(nodes: list[ServerProcess], orders: int, jobs: int, clients: int,
                  file_id: str) -> list[float]:
    """Every order from `clients` threads spread over the nodes; each order's seconds."""
    next_order = iter(range(orders))
    lock = threading.Lock()
    times: list[float] = []

    def one_client(node: ServerProcess) -> None:
        while True:
            with lock:
                n = next(next_order, None)
            if n is None:
                return
            body = {"name": f"order {n}", "jobs": [
                {"filament_id": "pla", "file_id": file_id, "print_weight_in_grams": 1}
                for j in range(jobs)]}
            began = time.perf_counter()
            answer = post_acknowledged(node, "/orders", body, f"bench-order-{n}", patience=120)
            assert answer is not None and answer.status_code == 201, (
                answer.text if answer is not None else "no answer")
            with lock:
                times.append(time.perf_counter() - began)

    threads = [threading.Thread(target=one_client, args=(nodes[i % len(nodes)],))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times


def view(nodes: list[ServerProcess]) -> dict[int, dict[str, Any]]:
    out = {}
    for node in nodes:
        data = node.cluster()
        out[node.index] = {"term": data["term"], "leader": data["leader"],
                           "lease_seq": next((n["lease"] or {}).get("seq")
                                             for n in data["nodes"] if n["self"]),
                           "pre_vote": data.get("pre_vote"),
                           "full_collections": data.get("full_collections")}
    return out


def gc_pauses(node: ServerProcess) -> dict[str, tuple[int, float]]:
    """Garbage collections of the node's process by generation: (count, seconds)."""
    text = node.client.get(f"http://127.0.0.1:{node.http_port}/metrics").text
    out: dict[str, tuple[int, float]] = {}
    for generation in ("0", "1", "2"):
        count = total = 0.0
        for line in text.splitlines():
            if f'generation="{generation}"' not in line:
                continue
            if line.startswith("mes_gc_pause_seconds_count"):
                count = float(line.rsplit(" ", 1)[1])
            elif line.startswith("mes_gc_pause_seconds_sum"):
                total = float(line.rsplit(" ", 1)[1])
        out[generation] = (int(count), round(total, 2))
    return out


@dataclass
class Outcome:
    """What one run saw: views before and after, the orders' times, jobs, lapses."""

    before: dict[int, dict[str, Any]]
    after: dict[int, dict[str, Any]]
    order_seconds: list[float]
    took: float
    statuses: Counter[str]
    lapses: dict[int, list[str]]

    @property
    def terms(self) -> set[int]:
        return {v["term"] for v in [*self.before.values(), *self.after.values()]}

    @property
    def leaders(self) -> set[str]:
        return {v["leader"] for v in [*self.before.values(), *self.after.values()]}

    @property
    def held(self) -> bool:
        return (len(self.terms) == 1 and len(self.leaders) == 1
                and not any(self.lapses.values()))


def run(cluster: Cluster, printers: int, orders: int, jobs: int, clients: int,
        settle: float) -> Outcome:
    """Register the printers, submit the orders, watch `settle` seconds more; print as it
    goes and return what it saw."""
    leader = cluster.wait_leader()
    wait_for(leader.admin_ready, 60, "the admin")
    began = time.perf_counter()
    register_printers(leader, printers, 8)
    print(f"{printers} printers registered in {time.perf_counter() - began:.1f} s", flush=True)
    wait_for(lambda: sum(n.client.get("/workers").json().get("printers", 0)
                         for n in cluster.nodes) >= printers, 120, "every printer driven")
    file_id = upload(leader)
    before = view(cluster.nodes)
    print(f"before: {before}", flush=True)
    began = time.perf_counter()
    times = sorted(submit_orders(cluster.nodes, orders, jobs, clients, file_id))
    took = time.perf_counter() - began
    print(f"{orders} orders of {jobs} jobs in {took:.1f} s ({orders * jobs / took:.0f} jobs/s);"
          f" an order p50 {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s", flush=True)
    time.sleep(settle)  # the measurement window after the load, not a sync
    after = view(cluster.nodes)
    print(f"after: {after}")
    for node in cluster.nodes:
        print(f"node {node.index} GC (count, s) by generation: {gc_pauses(node)}")
    every = leader.every("/print_jobs", timeout=60)
    statuses = Counter(j["status"] for j in every)
    holds = Counter((j.get("hold") or {}).get("code") for j in every if j["status"] == "Queued")
    print(f"jobs: {dict(statuses)}; queued jobs' holds: {dict(holds)}")
    lapses = {n.index: [line for line in n.log_path.read_text(errors="replace").splitlines()
                        if LAPSES.search(line)] for n in cluster.nodes}
    for index, lines in lapses.items():
        print(f"node {index}: {len(lines)} lease lapses" +
              "".join(f"\n    {line}" for line in lines[:5]))
    outcome = Outcome(before, after, times, took, statuses, lapses)
    print(f"terms seen {sorted(outcome.terms)}, leaders {sorted(outcome.leaders)}: "
          f"{'held' if outcome.held else 'FAILED'}")
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds watched after the last order")
    parser.add_argument("--keep", type=Path, help="keep the nodes' data and logs here")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every node (again for more)")
    args = parser.parse_args()
    env = {**NODE_SETTINGS, **dict(item.split("=", 1) for item in args.env)}
    with tempfile.TemporaryDirectory(prefix="mes-big-orders-") as tmp:
        cluster = Cluster(3, args.keep or Path(tmp), **env)
        cluster.start()
        try:
            outcome = run(cluster, args.printers, args.orders, args.jobs, args.clients,
                          args.settle)
        finally:
            cluster.stop()
    return 0 if outcome.held else 1


if __name__ == "__main__":
    sys.exit(main())
