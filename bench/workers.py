"""Printer workers at scale: N emulated OctoPrint printers polled by one leader.

For each N it starts `mock-printer --count N`, one `server` node with
PRINTER_WORKER_INTERVAL=1, registers the printers, gives a tenth of them a print, and
measures over a window: polls/s achieved, tick lag p50/p99, the leader's CPU (share of
one core) and peak RSS, and Raft commands/s.

    .venv/bin/python bench/workers.py [--counts 100 500 1000] [--window 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import ServerProcess  # noqa: E402
from tests.emulators import free_ports  # noqa: E402
from tests.polling import wait_for  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GCODE = b"G28\nG1 X10 Y10 Z0.2\nG1 X20 E1\nM84\n"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(count: int, window: float, base: Path) -> dict[str, Any]:
    """One measurement with `count` printers."""
    port = free_ports(count)
    log = (base / f"emulator-{count}.log").open("wb")
    emulator = subprocess.Popen(
        [sys.executable, "-m", "mes.emulator.cli", "--api", "OctoPrint", "--port", str(port),
         "--count", str(count), "--job-time", "8"], stdout=log, stderr=subprocess.STDOUT)
    node = ServerProcess(0, base / f"n{count}", {"PRINTER_WORKER_INTERVAL": "1",
                                                 "AUTO_CLEAR_BED": "true"})
    node.data_dir.mkdir(parents=True)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port + count - 1}/emulator/status",
                                   timeout=1).status_code == 200, 60, "the emulator")
        node.start()
        wait_for(lambda: node.cluster()["role"] == "leader", 20, "the node to lead")
        api = node.client
        spool = {"id": "s", "type": "PLA", "color": "x", "total_weight_in_grams": 100_000}
        assert api.post("/filaments", json=spool).status_code == 201
        for i in range(count):
            body = {"id": f"p{i}", "api": "OctoPrint", "url": f"http://127.0.0.1:{port + i}",
                    "api_key": "mockkey", "worker": True, "filament_id": "s"}
            assert api.post("/printers", json=body).status_code == 201
        file_id = api.post("/files", files={"file": ("b.gcode", GCODE)}).json()["id"]
        for _ in range(count // 10):
            api.post("/print_jobs", json={"filament_id": "s", "file_id": file_id,
                                          "print_weight_in_grams": 1})
        wait_for(lambda: api.get("/workers").json().get("printers") == count, 60,
                 "a worker per printer")
        time.sleep(5)  # warm-up, not synchronisation: let every worker reach steady ticks
        pid = node.process.pid  # type: ignore[union-attr]
        first, cpu0, index0 = api.get("/workers").json(), cpu_seconds(pid), \
            node.cluster()["applied_index"]
        started = time.monotonic()
        time.sleep(window)  # the measurement window
        elapsed = time.monotonic() - started
        last, cpu1, index1 = api.get("/workers").json(), cpu_seconds(pid), \
            node.cluster()["applied_index"]
        done = sum(1 for j in api.get("/print_jobs").json() if j["status"] == "Done")
        return {
            "printers": count,
            "polls_per_s": (last["ticks"] - first["ticks"]) / elapsed,
            "lag_p50_ms": last["lag_p50_ms"], "lag_p99_ms": last["lag_p99_ms"],
            "cpu_core": (cpu1 - cpu0) / elapsed,
            "peak_rss_mb": peak_rss_mb(pid),
            "raft_cmds_per_s": (index1 - index0) / elapsed,
            "jobs_done": done,
        }
    finally:
        node.stop()
        node.client.close()
        emulator.terminate()
        emulator.wait(20)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per N")
    args = parser.parse_args()
    print("one leader node, PRINTER_WORKER_INTERVAL=1, emulated OctoPrint printers, "
          "a tenth of them printing; 2-core machine shared with the emulator\n")
    print(f"{'printers':>8} {'polls/s':>8} {'lag p50':>9} {'lag p99':>9} {'CPU core':>9} "
          f"{'peak RSS':>9} {'raft cmd/s':>10} {'jobs done':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            r = run(count, args.window, Path(tmp))
            print(f"{r['printers']:>8} {r['polls_per_s']:>8.0f} {r['lag_p50_ms']:>7.1f}ms "
                  f"{r['lag_p99_ms']:>7.1f}ms {r['cpu_core']:>8.0%} {r['peak_rss_mb']:>7.0f}MB "
                  f"{r['raft_cmds_per_s']:>10.1f} {r['jobs_done']:>9}", flush=True)
    print("\ngoal: 1,000 printers at 1 s on one core with tick lag p99 under 250 ms")


if __name__ == "__main__":
    main()
