"""Retention on the state machine alone: what `retention.prune` deletes, in bounded batches,
and what it keeps (active jobs, recent jobs, files still printed, recent audit entries)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mes.files.store import BlobStore
from mes.files.sweep import remove_stale
from mes.state import retention
from mes.state.context import ChangeEvent
from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from mes.state.tables import (
    audit_log,
    files,
    job_history,
    orders,
    print_jobs,
    printer_state_intervals,
)


class Farm:
    """A state machine whose commands carry an explicit timestamp."""

    def __init__(self) -> None:
        self.machine = StateMachine()
        self.ts = 1_000.0

    def at(self, ts: float, op: str, actor: str | None = None, **args: Any) -> Outcome:
        command: dict[str, Any] = {"op": op, "args": args, "ts": ts}
        if actor is not None:
            command["actor"] = actor
        return self.machine.apply(command)

    def count(self, table: Any) -> int:
        return int(self.machine.read(lambda c: c.execute(
            select(func.count()).select_from(table)).scalar_one()))


def sha(n: int) -> str:
    return hashlib.sha256(f"file {n}".encode()).hexdigest()


def farm_with_history(jobs: int) -> Farm:
    """`jobs` jobs finished at t=2000+i (half Done, half Canceled, one order of two jobs
    among them), a Queued job printing file 0 made at t=1500, and audited user commands."""
    farm = Farm()
    assert farm.at(1000, Op.FILAMENT_CREATE, id="f1", type="PLA", color="red",
                   total_weight_in_grams=100_000).ok
    for n in range(3):
        assert farm.at(1000, Op.FILE_REGISTER, id=sha(n), name=f"part{n}.gcode", size=10).ok
    assert farm.at(1100, Op.ORDER_CREATE, id="o1", owner_id="u1", jobs=[
        {"id": "oj1", "filament_id": "f1", "file_id": sha(1), "print_weight_in_grams": 1},
        {"id": "oj2", "filament_id": "f1", "file_id": sha(1), "print_weight_in_grams": 1},
    ]).ok
    for job_id in ("oj1", "oj2"):
        assert farm.at(1200, Op.JOB_SET_STATUS, id=job_id, status="Canceled").ok
    for i in range(jobs):
        job_id = f"j{i}"
        assert farm.at(1500, Op.JOB_CREATE, id=job_id, filament_id="f1", filepath="x.gcode",
                       file_id=sha(2) if i == 0 else None, print_weight_in_grams=1).ok
        if i % 2:
            assert farm.at(1600, Op.JOB_SET_STATUS, id=job_id, status="Running").ok
            assert farm.at(2000 + i, Op.JOB_SET_STATUS, id=job_id, status="Done").ok
        else:
            assert farm.at(2000 + i, Op.JOB_SET_STATUS, id=job_id, status="Canceled").ok
    assert farm.at(1500, Op.JOB_CREATE, id="active", filament_id="f1",
                   file_id=sha(0), print_weight_in_grams=1).ok
    return farm


def prune(farm: Farm, jobs_before: float | None, audit_before: float | None = None,
          limit: int = 500) -> Outcome:
    return farm.at(9_999_999, Op.RETENTION_PRUNE, jobs_before=jobs_before,
                   audit_before=audit_before, limit=limit)


def test_prune_deletes_finished_jobs_their_history_orders_and_unprinted_files() -> None:
    farm = farm_with_history(10)
    assert farm.count(print_jobs) == 13
    # Jobs that ended before 2005: j0..j4, and the order's two jobs (ended at 1200).
    outcome = prune(farm, 2005)
    assert outcome.ok, outcome.error
    assert outcome.value == {"jobs": 7, "orders": 1, "files": 2, "intervals": 0, "audit": 0,
                             "more": False}
    left = farm.machine.read(lambda c: sorted(r.id for r in c.execute(select(print_jobs.c.id))))
    assert left == ["active", "j5", "j6", "j7", "j8", "j9"]
    history_jobs = farm.machine.read(lambda c: {r.job_id for r in c.execute(
        select(job_history.c.job_id))})
    assert history_jobs == set(left)
    assert farm.count(orders) == 0
    # File 0 is printed by the active job; 1 (the order's) and 2 (j0's) are gone.
    kept = farm.machine.read(lambda c: [r.id for r in c.execute(select(files.c.id))])
    assert kept == [sha(0)]
    deleted = {e for e in outcome.events if e.change == "deleted"}
    assert ChangeEvent("print_job", "j0", "deleted") in deleted
    assert ChangeEvent("order", "o1", "deleted") in deleted
    assert ChangeEvent("file", sha(2), "deleted") in deleted
    assert len(deleted) == 7 + 1 + 2
    # Nothing older is left: a second prune with the same cutoff deletes nothing.
    assert prune(farm, 2005).value == {"jobs": 0, "orders": 0, "files": 0, "intervals": 0,
                                       "audit": 0, "more": False}


def test_prune_works_in_bounded_batches_and_keeps_active_jobs() -> None:
    farm = farm_with_history(25)
    done = []
    while True:
        outcome = prune(farm, 10**6, limit=4)
        assert outcome.ok, outcome.error
        assert outcome.value["jobs"] <= 4
        done.append(outcome.value)
        if not outcome.value["more"]:
            break
    assert sum(v["jobs"] for v in done) == 27
    assert len(done) == 7  # 27 jobs, 4 at a time
    assert farm.machine.read(lambda c: [r.id for r in c.execute(select(print_jobs.c.id))]) \
        == ["active"]
    assert farm.count(job_history) == 1


def test_prune_deletes_old_audit_entries_and_none_keeps_a_kind() -> None:
    farm = Farm()
    for ts in (100, 200, 300):
        farm.machine._conn.execute(audit_log.insert().values(at=ts, actor="a", op="x"))
    farm.machine._conn.commit()
    outcome = prune(farm, None, 250)
    assert outcome.value == {"jobs": 0, "orders": 0, "files": 0, "intervals": 0, "audit": 2,
                             "more": False}
    assert farm.count(audit_log) == 1


def test_prune_deletes_printer_state_stretches_that_ended_before_the_cutoff() -> None:
    farm = Farm()
    stretches = [("offline", 1000, 2000), ("idle", 2000, 3000), ("printing", 3000, 4000),
                 ("idle", 4000, None)]  # as apply records them; the last one still open
    farm.machine._conn.execute(printer_state_intervals.insert(), [
        {"printer_id": "p1", "state": state, "started_at": start, "ended_at": end}
        for state, start, end in stretches])
    farm.machine._conn.commit()
    outcome = prune(farm, 3000.5)  # offline ended at 2000 and idle at 3000: both go
    assert outcome.value["intervals"] == 2 and outcome.value["more"] is False
    left = farm.machine.read(lambda c: [(r.state, r.ended_at) for r in c.execute(
        select(printer_state_intervals).order_by(printer_state_intervals.c.started_at))])
    assert left == [("printing", 4000.0), ("idle", None)]  # the open stretch always stays
    assert not farm.machine.read(lambda c: retention.pending(c, 3000.5, None))


def test_prune_refuses_bad_arguments_and_users() -> None:
    farm = Farm()
    assert prune(farm, -1).error["code"] == "invalid_cutoff"  # type: ignore[index]
    assert prune(farm, 10, limit=retention.MAX_BATCH + 1).error is not None
    refused = farm.at(5, Op.RETENTION_PRUNE, actor="nobody", jobs_before=1, limit=1)
    assert refused.error is not None and refused.error["code"] == "account_disabled"


def test_pending_says_whether_a_prune_would_delete() -> None:
    farm = farm_with_history(2)
    assert not farm.machine.read(lambda c: retention.pending(c, 1000, None))
    assert farm.machine.read(lambda c: retention.pending(c, 1300, None))
    assert not farm.machine.read(lambda c: retention.pending(c, None, None))


def test_sweep_deletes_only_unreferenced_blobs_past_the_grace(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    kept = store.put(b"kept")
    old = store.put(b"old, unreferenced")
    fresh = store.put(b"fresh, not yet registered")
    stale_upload = tmp_path / ".incoming-abc"
    stale_upload.write_bytes(b"half")
    an_hour_ago = time.time() - 3600
    for path in (store.path(kept), store.path(old), stale_upload):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert remove_stale(store, {kept}, grace=60) == 2
    assert store.has(kept) and store.has(fresh) and not store.has(old)
    assert not stale_upload.exists()
    # Storing the same content again makes it fresh: a re-upload is spared the sweep.
    os.utime(store.path(fresh), (an_hour_ago, an_hour_ago))
    store.put(b"fresh, not yet registered")
    assert remove_stale(store, set(), grace=60) == 1  # only `kept`, now unreferenced
    assert store.has(fresh)
