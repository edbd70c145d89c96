"""CPU cost of a /metrics scrape, of the utilisation report, and of the state intervals that
telemetry now records, on a farm of 1,000 printers (commands applied straight to the state
machine, so the numbers are the node's own work, not Raft's).

    .venv/bin/python bench/metrics_scrape.py [--printers 1000] [--jobs 100000] [--days 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mes.config import Settings
from mes.node import FarmNode
from mes.state import utilization
from mes.state.ops import Op
from mes.state.tables import assignments
from tests.ports import free_port

STATES = ("idle", "printing", "paused", "printing", "finished", "offline", "error")
SHA = "d" * 64


def cpu(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median and worst thread CPU milliseconds of `fn` over `runs` calls."""
    spent = []
    for _ in range(runs):
        started = time.thread_time()
        fn()
        spent.append((time.thread_time() - started) * 1000)
    return statistics.median(spent), max(spent)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30, help="of state changes, 6 a day")
    parser.add_argument("--no-intervals", action="store_true",
                        help="telemetry without recording state intervals (the baseline)")
    args = parser.parse_args()
    if args.no_intervals:
        from mes.state import farm
        farm.record_states = lambda ctx, ids: None
    root = Path(tempfile.mkdtemp(prefix="mes-bench-metrics-"))
    node = FarmNode(Settings(_env_file=None, data_dir=root / "data",  # type: ignore[call-arg]
                             upload_path=root / "upload", raft_self=f"127.0.0.1:{free_port()}"))
    try:
        run(node, args.printers, args.jobs, args.days)
    finally:
        node.close()


def epoch_of(node: FarmNode, printer_id: str) -> int:
    """The printer's assignment epoch."""
    return int(node.machine.read(lambda c: c.execute(select(assignments.c.epoch).where(
        assignments.c.printer_id == printer_id)).scalar_one()))


def run(node: FarmNode, count: int, jobs: int, days: int) -> None:
    apply = node.machine.apply
    start = time.time() - days * 86400
    ids = [f"p{i:04d}" for i in range(count)]

    def do(at: float, op: str, **args: Any) -> Any:
        outcome = apply({"op": op, "args": args, "ts": at})
        assert outcome.ok, outcome.error
        return outcome.value

    do(start, Op.FILAMENT_CREATE, id="f1", type="PLA", color="red",
       total_weight_in_grams=100_000)
    do(start, Op.FILE_REGISTER, id=SHA, name="a.gcode", size=10)
    leader = do(start, Op.LEADER_BEGIN, leader="bench")["epoch"]
    for i, printer_id in enumerate(ids):
        do(start, Op.PRINTER_CREATE, id=printer_id, group=f"g{i % 10}")
    me = node.settings.raft_self  # every printer driven by this node, as the leader would do
    do(start, Op.NODE_LEASE, node=me)
    do(start, Op.SHARD_ASSIGN, leader_epoch=leader, now=start,
       moves=[{"printer_id": pid, "epoch": 0, "node": me} for pid in ids])
    epochs = {pid: epoch_of(node, pid) for pid in ids}

    def telemetry(at: float, step: int) -> None:
        do(at, Op.PRINTER_TELEMETRY, statuses=[
            {"printer_id": pid, "epoch": epochs[pid], "state": STATES[(step + i) % len(STATES)],
             "observed_at": at} for i, pid in enumerate(ids)])

    steps = days * 6
    loaded = time.perf_counter()
    for step in range(steps):
        telemetry(start + step * 14_400, step)
    print(f"{count} printers, {steps} state changes each "
          f"({count * steps:,} intervals) in {time.perf_counter() - loaded:.1f} s")

    # Telemetry with every printer changing state vs none changing (temperatures only).
    now = time.time()
    changing = cpu(lambda: telemetry(now, int(time.monotonic() * 1000)), 10)
    same = [{"printer_id": pid, "epoch": epochs[pid], "state": "idle", "observed_at": now,
             "bed_actual": 20.0} for pid in ids]
    do(now, Op.PRINTER_TELEMETRY, statuses=same)

    def unchanged() -> None:
        for row in same:
            row["bed_actual"] += 1
        do(now, Op.PRINTER_TELEMETRY, statuses=same)

    steady = cpu(unchanged, 10)
    print(f"apply of one telemetry command for {count} printers: every state changes "
          f"{changing[0]:.1f} ms CPU (worst {changing[1]:.1f}); none changes "
          f"{steady[0]:.1f} ms (worst {steady[1]:.1f})")

    loaded = time.perf_counter()
    for j in range(jobs):
        do(start + j, Op.JOB_CREATE, id=f"j{j}", filament_id="f1", file_id=SHA,
           print_weight_in_grams=1)
    print(f"{jobs:,} jobs in {time.perf_counter() - loaded:.1f} s")

    scrape = cpu(node.metrics.render, 20)
    size = len(node.metrics.render())
    print(f"/metrics render: {scrape[0]:.1f} ms CPU median, {scrape[1]:.1f} ms worst, "
          f"{size:,} bytes")
    for window_days in (1, days):
        now = time.time()
        report = cpu(lambda w=window_days, n=now: node.machine.read(  # type: ignore[misc]
            lambda c: utilization.report(c, n - w * 86400, n, n)), 5)
        print(f"utilisation report, {window_days}-day window over {count} printers: "
              f"{report[0]:.1f} ms CPU median, {report[1]:.1f} ms worst")


if __name__ == "__main__":
    main()
