"""Time a snapshot spends on the Raft thread, before (all of it) and after (the image only).

    .venv/bin/python bench/snapshot_cost.py [--jobs 95000] [--entries 5000]
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pysyncobj.config import SERIALIZER_STATE  # noqa: E402

from mes.raft.journal import SyncedJournal  # noqa: E402
from mes.raft.snapshot import SnapshotFiles  # noqa: E402
from mes.state.machine import StateMachine  # noqa: E402
from mes.state.ops import Op  # noqa: E402


def filled_machine(jobs: int) -> StateMachine:
    """A state machine holding `jobs` queued jobs."""
    machine = StateMachine()
    machine.apply({"op": Op.PRINTER_CREATE, "args": {"id": "p"}, "ts": 1.0, "rid": "p"})
    machine.apply({"op": Op.FILAMENT_CREATE, "ts": 1.0, "rid": "s", "args": {
        "id": "f", "type": "PLA", "color": "x", "total_weight_in_grams": 10**9}})
    for n in range(jobs):
        machine.apply({"op": Op.JOB_CREATE, "ts": 2.0, "rid": f"request-{n:032d}", "args": {
            "id": f"job-{n:08d}", "printer_id": "p", "filament_id": "f",
            "filepath": f"models/part-{n % 977}.gcode", "print_weight_in_grams": 1}})
    return machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=95_000)
    parser.add_argument("--entries", type=int, default=5000, help="journal entries to compact")
    args = parser.parse_args()
    machine = filled_machine(args.jobs)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "raft.snapshot"
        began = time.perf_counter()
        payload = {"format": "mes-snapshot-1", "db": machine.snapshot(), "raft": None}
        with gzip.open(target, "wb", compresslevel=1) as out:
            pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
        before = time.perf_counter() - began
        print(f"{args.jobs} jobs, image {len(payload['db']) / 1e6:.1f} MB, "
              f"file {target.stat().st_size / 1e6:.1f} MB")
        print(f"before: whole snapshot on the Raft thread        {before * 1000:7.1f} ms")

        snapshots = SnapshotFiles(machine)
        began = time.perf_counter()
        snapshots.serialize(str(target) + ".tmp", None)
        on_thread = time.perf_counter() - began
        while snapshots.check() == SERIALIZER_STATE.SERIALIZING:
            time.sleep(0.001)
        total = time.perf_counter() - began
        began = time.perf_counter()
        print(f"after:  image on the Raft thread                 {on_thread * 1000:7.1f} ms")
        print(f"        whole write incl. fsync (background)     {total * 1000:7.1f} ms")

        journal = SyncedJournal(str(Path(tmp) / "raft.journal"))
        for i in range(1, args.entries + 1):
            journal.add(b"x" * 300, i, 1)
        journal.sync()
        began = time.perf_counter()
        journal.deleteEntriesTo(args.entries // 2)
        compact = time.perf_counter() - began
        print(f"        journal compaction, {args.entries} entries (Raft thread, "
              f"synced rewrite) {compact * 1000:7.1f} ms")
        began = time.perf_counter()
        for i in range(100):
            journal.add(b"x" * 300, args.entries + 1 + i, 1)
            journal.sync()
        print(f"journal sync of one entry                        "
              f"{(time.perf_counter() - began) * 10:7.2f} ms")


if __name__ == "__main__":
    main()
