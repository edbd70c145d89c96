"""Printer workers spread over a cluster: N emulated OctoPrint printers, floating, driven by
every node of a 3-node cluster (the leader balances them).

It starts the emulators (`mock-printer`, in processes of their own, `--emulators` of them),
a 3-node cluster on loopback with PRINTER_WORKER_INTERVAL, registers N floating printers,
waits until every printer has a worker on some node, and measures over a window, per node:
printers driven, polls/s, tick lag p50/p99, CPU (share of one core), peak RSS; and the
cluster's Raft commands/s. The baseline of the same run is one node driving N/3 printers
alone (the single-node bench's set-up), so that what the cluster adds per node shows.

    .venv/bin/python bench/cluster_workers.py [--printers 3000] [--interval 1] [--window 20]

A 2-core machine runs the emulators and the three nodes together: when the emulators cannot
keep up, polls/s falls below printers/interval and the lag grows on every node alike.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.workers import cpu_seconds, peak_rss_mb, register  # noqa: E402
from tests.cluster import Cluster, ServerProcess  # noqa: E402
from tests.emulators import free_ports  # noqa: E402
from tests.polling import wait_for  # noqa: E402


def start_emulators(total: int, processes: int, base: Path
                    ) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """`processes` emulator processes serving `total` printers; (processes, printer URLs)."""
    share, rest = divmod(total, processes)
    emulators: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    for n in range(processes):
        count = share + (1 if n < rest else 0)
        port = free_ports(count)
        with (base / f"emulator-{n}.log").open("wb") as log:
            emulators.append(subprocess.Popen(
                [sys.executable, "-m", "mes.emulator.cli", "--api", "OctoPrint", "--port",
                 str(port), "--count", str(count), "--job-time", "8"],
                stdout=log, stderr=subprocess.STDOUT))
        last = f"http://127.0.0.1:{port + count - 1}/emulator/status"
        wait_for(lambda url=last: httpx.get(url, timeout=1).status_code == 200, 60,  # type: ignore[misc]
                 "the emulator")
        urls += [f"http://127.0.0.1:{port + i}" for i in range(count)]
    return emulators, urls


def measure(nodes: list[ServerProcess], emulators: list[subprocess.Popen[bytes]],
            total: int, window: float) -> dict[str, Any]:
    """Wait for a worker per printer over `nodes`, warm up, and measure one window."""
    def workers(node: ServerProcess) -> dict[str, Any]:
        data: dict[str, Any] = node.client.get("/workers", timeout=60).json()
        return data

    wait_for(lambda: sum(workers(n).get("printers") or 0 for n in nodes) == total, 120,
             "a worker per printer")
    time.sleep(10)  # warm-up, not synchronisation: the lags reported are those of 30 s
    pids = [n.process.pid for n in nodes]  # type: ignore[union-attr]
    first = [workers(n) for n in nodes]
    cpu0 = [cpu_seconds(pid) for pid in pids]
    emu0 = sum(cpu_seconds(e.pid) for e in emulators)
    index0 = nodes[0].cluster()["applied_index"]
    started = time.monotonic()
    time.sleep(window)  # the measurement window
    elapsed = time.monotonic() - started
    last = [workers(n) for n in nodes]
    cpu1 = [cpu_seconds(pid) for pid in pids]
    index1 = nodes[0].cluster()["applied_index"]
    per_node = []
    for n, node in enumerate(nodes):
        role = node.cluster()["role"]
        per_node.append({
            "node": node.index, "role": role, "printers": last[n].get("printers") or 0,
            "polls_per_s": (last[n]["ticks"] - first[n]["ticks"]) / elapsed,
            "lag_p50_ms": last[n]["lag_p50_ms"], "lag_p99_ms": last[n]["lag_p99_ms"],
            "cpu_core": (cpu1[n] - cpu0[n]) / elapsed, "peak_rss_mb": peak_rss_mb(pids[n])})
    return {"nodes": per_node, "raft_cmds_per_s": (index1 - index0) / elapsed,
            "emulator_core": (sum(cpu_seconds(e.pid) for e in emulators) - emu0) / elapsed}


def run(size: int, total: int, interval: float, window: float, emulator_processes: int,
        base: Path, opcua: bool = False) -> dict[str, Any]:
    """One measurement: `size` nodes, `total` floating printers."""
    base.mkdir(parents=True, exist_ok=True)
    emulators, urls = start_emulators(total, emulator_processes, base)
    cluster = Cluster(size, base / f"cluster-{size}", PRINTER_WORKER_INTERVAL=str(interval),
                      AUTO_CLEAR_BED="true", LOG_LEVEL="WARNING",
                      OPCUA_ENABLED=str(opcua).lower())
    try:
        cluster.start()
        leader = cluster.wait_leader(30)
        api = leader.client
        spool = {"id": "s", "type": "PLA", "color": "x", "total_weight_in_grams": 100_000}
        assert api.post("/filaments", json=spool, timeout=60).status_code == 201
        register(api, [{"id": f"p{i}", "api": "OctoPrint", "url": url, "api_key": "mockkey",
                        "worker": True, "filament_id": "s"} for i, url in enumerate(urls)])
        return measure(cluster.nodes, emulators, total, window)
    finally:
        cluster.stop()
        for emulator in emulators:
            emulator.terminate()
            emulator.wait(20)


def report(title: str, result: dict[str, Any]) -> None:
    """Print one run's table."""
    print(title)
    print(f"{'node':>5} {'role':>9} {'printers':>8} {'polls/s':>8} {'lag p50':>9} "
          f"{'lag p99':>9} {'CPU':>6} {'peak RSS':>9}")
    for r in result["nodes"]:
        print(f"{r['node']:>5} {r['role']:>9} {r['printers']:>8} {r['polls_per_s']:>8.0f} "
              f"{r['lag_p50_ms']:>7.1f}ms {r['lag_p99_ms']:>7.1f}ms {r['cpu_core']:>6.0%} "
              f"{r['peak_rss_mb']:>7.0f}MB")
    total = sum(r["polls_per_s"] for r in result["nodes"])
    print(f"cluster: {total:,.0f} polls/s, {result['raft_cmds_per_s']:.1f} Raft commands/s, "
          f"emulators {result['emulator_core']:.0%} of a core\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=3000)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="PRINTER_WORKER_INTERVAL of every node, seconds")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--emulators", type=int, default=2, help="emulator processes")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the single node with a third of the printers")
    parser.add_argument("--opcua", action="store_true",
                        help="run every node's embedded OPC UA server too (each mirrors every "
                        "printer of the farm)")
    args = parser.parse_args()
    print(f"{args.printers} floating emulated OctoPrint printers, PRINTER_WORKER_INTERVAL="
          f"{args.interval:g}, {args.emulators} emulator processes, OPC UA "
          f"{'on' if args.opcua else 'off'}; all on this machine\n")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if not args.no_baseline:
            third = args.printers // 3
            report(f"baseline: 1 node, {third} printers",
                   run(1, third, args.interval, args.window, args.emulators, base / "one",
                       args.opcua))
        report(f"3-node cluster, {args.printers} printers",
               run(3, args.printers, args.interval, args.window, args.emulators,
                   base / "three", args.opcua))


if __name__ == "__main__":
    main()
