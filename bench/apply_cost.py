"""What the replicated state machine's apply costs per command, for the hot commands.

No Raft and no HTTP: commands go straight to `StateMachine.apply` on its usual scratch
SQLite file (WAL, synchronous=OFF), shaped as the REST API and the workers write them. A
farm is built first (not timed): a bootstrap admin, N mock printers with workers assigned
to one node, 50 spools, a node lease, the leader's epoch and M existing jobs. Then each
row repeats its command for about `--seconds` and prints µs per command (mean, p50) and
the SQL statements per command, counted by sqlite3's trace callback during an untimed
warm-up (transaction statements, BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE, apart; each row
of an executemany counts as one statement, as SQLite runs it once per row). A rejected
command stops the bench (exit status 1). The worker's path on one printer (claim, sending,
started, finished, bed_cleared) is one cycle: its five rows share `--seconds`. Statements
whose query plan scans a whole table or index are listed after the table.

    .venv/bin/python bench/apply_cost.py [--printers 1000] [--jobs 2000] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from mes.state.commands import current_version  # noqa: E402
from mes.state.machine import Outcome, StateMachine  # noqa: E402
from mes.state.ops import Op  # noqa: E402
from mes.state.shards import MAX_MOVES  # noqa: E402
from mes.state.tables import assignments  # noqa: E402

SPOOLS = 50
NODE = "127.0.0.1:5001"
ADMIN = "admin"
FILE_ID = "ab" * 32
TX_WORDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END"})
WARMUP = 20  # untimed, traced repetitions of each row before the timed ones
# (row label, or None for an untimed setup command; the command)
Step = tuple[str | None, dict[str, Any]]


@dataclass
class Stat:
    """One row: the timed applies of one label and the statements its traced ones ran."""

    times: list[float] = field(default_factory=list)
    traced: int = 0
    sql: int = 0
    tx: int = 0
    statements: set[str] = field(default_factory=set)


class Bench:
    """A state machine, the running Raft index and time, and the statement tracer."""

    def __init__(self) -> None:
        self.machine = StateMachine()
        raw = self.machine._conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        self.raw = raw
        self.index = self.serial = 0  # the Raft index; a counter for unique ids
        self.ts = 1_700_000_000.0
        self.counting: Stat | None = None

    def new_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def cmd(self, op: Op, args: dict[str, Any], actor: str | None = None,
            rid: bool = True) -> dict[str, Any]:
        """A command as mes.raft.writer builds it (rid None: not remembered)."""
        self.ts += 0.001
        command: dict[str, Any] = {"op": str(op), "v": current_version(op), "args": args,
                                   "rid": self.new_id("rid-") if rid else None, "ts": self.ts}
        if actor is not None:
            command["actor"] = actor
        return command

    def apply(self, command: dict[str, Any]) -> Outcome:
        """Apply at the next index; stop the bench if the command was rejected."""
        self.index += 1
        outcome = self.machine.apply(command, self.index)
        if outcome.error is not None:
            print(f"{command['op']} rejected: {outcome.error}\n{command}", file=sys.stderr)
            sys.exit(1)
        return outcome

    def trace(self, statement: str) -> None:
        if (stat := self.counting) is not None:
            if (statement.split(None, 1) or [""])[0].upper() in TX_WORDS:
                stat.tx += 1
            else:
                stat.sql += 1
                stat.statements.add(statement)

    def measure(self, cycle: Callable[[], list[Step]], seconds: float,
                stats: dict[str, Stat]) -> None:
        """Run `cycle` WARMUP times traced, then timed until `seconds` have passed."""
        self.raw.set_trace_callback(self.trace)
        for _ in range(WARMUP):
            for label, command in cycle():
                self.counting = stats.setdefault(label, Stat()) if label else None
                self.apply(command)
                if self.counting is not None:
                    self.counting.traced += 1
        self.counting = None
        self.raw.set_trace_callback(None)
        clock = time.perf_counter
        stop = clock() + seconds
        while clock() < stop:
            for label, command in cycle():
                began = clock()
                self.apply(command)
                if label:
                    stats[label].times.append(clock() - began)

    def scans(self, stats: dict[str, Stat]) -> dict[str, list[str]]:
        """Query plan steps that scan a whole table or index (with the statement's start),
        and the rows whose commands ran them."""
        found: dict[str, list[str]] = {}
        for label, stat in stats.items():
            for statement in stat.statements:
                try:
                    plan = self.raw.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
                except sqlite3.Error:
                    continue
                for *_, detail in plan:
                    if detail.startswith("SCAN") and "CONSTANT ROW" not in detail:
                        key = f"{detail}: {' '.join(statement.split())[:70]}..."
                        if label not in found.setdefault(key, []):
                            found[key].append(label)
        return found


def build_farm(bench: Bench, printers: int, jobs: int) -> dict[str, int]:
    """The farm every row runs on; returns each printer's assignment epoch."""
    cmd, apply = bench.cmd, bench.apply
    apply(cmd(Op.USER_BOOTSTRAP, {"user_id": ADMIN, "name": "Admin", "token_id": "t-admin",
                                  "token_name": "bootstrap", "token_hash": "0" * 64}))
    for i in range(SPOOLS):
        apply(cmd(Op.FILAMENT_CREATE, {"id": f"f{i}", "type": "PLA", "color": "black",
                                       "total_weight_in_grams": 100_000}, ADMIN))
    for i in range(printers):
        apply(cmd(Op.PRINTER_CREATE, {"id": f"p{i}", "api": "OctoPrint", "worker": True,
                                      "url": f"http://mock-printer-{i}", "company": "Prusa",
                                      "model": "MK4", "filament_id": f"f{i % SPOOLS}"}, ADMIN))
    apply(cmd(Op.FILE_REGISTER, {"id": FILE_ID, "name": "bench.gcode", "size": 1000}, ADMIN))
    apply(cmd(Op.NODE_LEASE, {"node": NODE}, rid=False))
    epoch = apply(cmd(Op.LEADER_BEGIN, {"leader": NODE})).value["epoch"]
    moves = [{"printer_id": f"p{i}", "epoch": 0, "node": NODE} for i in range(printers)]
    for start in range(0, len(moves), MAX_MOVES):
        done = apply(cmd(Op.SHARD_ASSIGN, {"leader_epoch": epoch, "now": bench.ts,
                                           "moves": moves[start:start + MAX_MOVES]},
                         rid=False)).value["moves"]
        assert set(done.values()) == {"moved"}, done
    for n in range(jobs):
        job_id = f"old{n}"
        apply(cmd(Op.JOB_CREATE, _job_args(job_id, n, printers), ADMIN))
        if n % 2:  # half of them are history already
            apply(cmd(Op.JOB_SET_STATUS, {"id": job_id, "status": "Canceled"}, ADMIN))
    return dict(bench.machine.read(lambda conn: conn.execute(
        select(assignments.c.printer_id, assignments.c.epoch)).all()))


def _job_args(job_id: str, n: int, printers: int) -> dict[str, Any]:
    """The arguments the REST API sends for a JSON job (owner: the caller)."""
    return {"id": job_id, "printer_id": f"p{n % printers}", "filament_id": f"f{n % SPOOLS}",
            "filepath": "bench.gcode", "print_weight_in_grams": 1, "owner_id": ADMIN}


def rows(bench: Bench, printers: int, epochs: dict[str, int]) -> list[Callable[[], list[Step]]]:
    """One cycle per row: each returns its steps, built fresh (new ids, later times)."""
    cmd, new_id = bench.cmd, bench.new_id
    printer = f"p{printers - 1}"  # the worker row's printer; telemetry never touches it

    def telemetry(count: int) -> list[Step]:
        bench.serial += 1  # alternates the state, so every status and interval changes
        state = ("idle", "printing")[bench.serial % 2]
        statuses = [{"printer_id": f"p{i}", "epoch": epochs[f"p{i}"], "state": state,
                     "observed_at": bench.ts, "nozzle_actual": 200.0 + bench.serial % 7,
                     "nozzle_target": 215.0, "bed_actual": 60.0, "bed_target": 60.0,
                     "progress": None, "time_printed": None, "time_left": None,
                     "file_name": None, "error": None} for i in range(count)]
        return [(f"printer.telemetry, {count} status{'es' * (count > 1)}",
                 cmd(Op.PRINTER_TELEMETRY, {"statuses": statuses}, rid=False))]

    def farm_job() -> list[Step]:
        args = _job_args(new_id("j"), bench.serial, printers)
        del args["owner_id"]
        return [("job.create, no actor (farm)", cmd(Op.JOB_CREATE, args))]

    def cancel() -> list[Step]:
        job_id = new_id("c")
        return [(None, cmd(Op.JOB_CREATE, _job_args(job_id, bench.serial, printers), ADMIN)),
                ("job.set_status Queued->Canceled, admin",
                 cmd(Op.JOB_SET_STATUS, {"id": job_id, "status": "Canceled"}, ADMIN))]

    def worker() -> list[Step]:
        job_id = new_id("w")
        job = {"printer_id": printer, "epoch": epochs[printer], "job_id": job_id}
        return [(None, cmd(Op.JOB_CREATE, {
                    "id": job_id, "printer_id": printer, "filament_id": "f0",
                    "file_id": FILE_ID, "print_weight_in_grams": 1, "owner_id": ADMIN}, ADMIN)),
                ("worker: job.claim", cmd(Op.JOB_CLAIM, {
                    **job, "printer_filename": f"{job_id}.gcode"})),
                ("worker: job.sending", cmd(Op.JOB_SENDING, job)),
                ("worker: job.started", cmd(Op.JOB_STARTED, job)),
                ("worker: job.finished", cmd(Op.JOB_FINISHED, job)),
                ("worker: printer.bed_cleared", cmd(Op.PRINTER_BED_CLEARED, {
                    "id": printer, "epoch": epochs[printer]}))]

    def order() -> list[Step]:
        order_id = new_id("o")
        jobs = [{key: value for key, value in _job_args(f"{order_id}-{n}", bench.serial + n,
                                                        printers).items() if key != "owner_id"}
                for n in range(100)]
        return [("order.create, 100 jobs, admin", cmd(Op.ORDER_CREATE, {
            "id": order_id, "owner_id": ADMIN, "jobs": jobs}, ADMIN))]

    return [lambda: [("job.create, admin actor + rid (REST)", cmd(
                Op.JOB_CREATE, _job_args(new_id("j"), bench.serial, printers), ADMIN))],
            farm_job, cancel, lambda: telemetry(1), lambda: telemetry(50),
            lambda: [("node.lease renewal", cmd(Op.NODE_LEASE, {"node": NODE}, rid=False))],
            worker, order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=1000, help="mock printers (1000)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs made beforehand (2000)")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per row")
    options = parser.parse_args()
    if options.printers < 51:
        parser.error("--printers must be at least 51 (50 report telemetry, 1 prints)")
    info = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in (
        info.read_text().splitlines() if info.exists() else []) if "model name" in line),
        platform.machine())
    bench = Bench()
    began = time.perf_counter()
    epochs = build_farm(bench, options.printers, options.jobs)
    built = time.perf_counter() - began
    print(f"apply cost: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
          f", SQLite {sqlite3.sqlite_version}; farm of {options.printers} printers on one node, "
          f"{SPOOLS} spools, {options.jobs} jobs (half canceled), built in {built:.1f} s")
    stats: dict[str, Stat] = {}
    for cycle in rows(bench, options.printers, epochs):
        bench.measure(cycle, options.seconds, stats)
    print(f"{'command':<42} {'N':>7} {'mean µs':>9} {'p50 µs':>8} {'SQL/cmd':>8} {'tx/cmd':>7}")
    for label, stat in stats.items():
        times = stat.times or [float("nan")]
        print(f"{label:<42} {len(stat.times):>7} {statistics.fmean(times) * 1e6:>9.0f} "
              f"{statistics.median(times) * 1e6:>8.0f} {stat.sql / stat.traced:>8.1f} "
              f"{stat.tx / stat.traced:>7.1f}")
    print("\nwhole-table scans in the query plans (harmless on small tables):")
    for scan, labels in sorted(bench.scans(stats).items()):
        print(f"  {scan}\n      in: {'; '.join(labels)}")
    bench.machine.close()


if __name__ == "__main__":
    main()
