"""CPU time of one `retention.prune` command on a large state, and of a pass that finds nothing.

    .venv/bin/python bench/retention_prune.py [--jobs 100000] [--old 5000] [--files 2000]

`--jobs` finished jobs with history (`--old` of them past the cutoff), `--files` file
records of which the old jobs print half, and as many audit entries as jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from mes.state import retention  # noqa: E402
from mes.state.machine import StateMachine  # noqa: E402
from mes.state.ops import Op  # noqa: E402
from mes.state.tables import audit_log, files, job_history, print_jobs  # noqa: E402


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def filled(jobs: int, old: int, file_count: int) -> StateMachine:
    """Rows written directly (fast); old jobs ended at t < 1000, the others at t >= 10^6."""
    machine = StateMachine()
    conn = machine._conn
    with conn.begin():
        conn.execute(insert(files), [{"id": sha(n), "name": f"{n}.gcode", "size": 1,
                                      "created_at": 1.0} for n in range(file_count)])
        rows, history, audit = [], [], []
        for n in range(jobs):
            ended = float(n) if n < old else 1e6 + n
            rows.append({"id": f"job-{n:08d}", "filament_id": "f", "filepath": "x.gcode",
                         "file_id": sha(n % file_count) if n < old else
                         sha(file_count // 2 + n % (file_count // 2)),
                         "print_weight_in_grams": 1,
                         "status": "Done" if n % 2 else "Canceled", "from_server": True,
                         "created_at": ended - 1, "updated_at": ended})
            history += [{"job_id": f"job-{n:08d}", "from_status": None, "to_status": "Queued",
                         "at": ended - 1, "cause": "created"},
                        {"job_id": f"job-{n:08d}", "from_status": "Queued",
                         "to_status": "Canceled", "at": ended, "cause": "api"}]
            audit.append({"at": ended, "actor": "u", "op": Op.JOB_CREATE,
                          "target": f"job-{n:08d}"})
        conn.execute(insert(print_jobs), rows)
        conn.execute(insert(job_history), history)
        conn.execute(insert(audit_log), audit)
    return machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--old", type=int, default=5_000)
    parser.add_argument("--files", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=500)
    options = parser.parse_args()
    machine = filled(options.jobs, options.old, options.files)
    cutoff = 1000.0 if options.old <= 1000 else float(options.old)
    cpu, more, total = [], True, 0
    while more:
        began = time.thread_time()
        outcome = machine.apply({"op": Op.RETENTION_PRUNE, "ts": 2e6, "args": {
            "jobs_before": cutoff, "audit_before": cutoff, "limit": options.batch}})
        cpu.append(time.thread_time() - began)
        assert outcome.ok, outcome.error
        more = outcome.value["more"]
        total += outcome.value["jobs"]
    began = time.thread_time()
    idle = machine.read(lambda c: retention.pending(c, cutoff, cutoff))
    check = time.thread_time() - began
    print(f"{options.jobs} finished jobs, {total} pruned in {len(cpu)} commands of at most "
          f"{options.batch}: CPU per command median {statistics.median(cpu) * 1000:.1f} ms, "
          f"max {max(cpu) * 1000:.1f} ms; the check that finds nothing: "
          f"{check * 1000:.2f} ms (found {idle})")


if __name__ == "__main__":
    main()
