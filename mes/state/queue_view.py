"""Reads of the queue: the waiting jobs in the order the scheduler takes them, each with its
position, and when each of the first ones should start.

A job waits while it is Queued and not being sent to a printer. Its position counts every
waiting job ahead of it (those of other users too). The estimate walks the head of the
queue as the scheduler would: each job goes to the printer it names, or to the printer with
its spool loaded that is free first; a printer is free now (idle, bed clear), when its print
ends (the time left it reported), or at a time not known (bed to clear, paused, in error,
offline, not driven), and a job whose printers are all unknown has no estimate, nor has a
job after one of unknown length on the same printer. It assumes beds are cleared as prints
end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from mes.state.farm import is_reserved
from mes.state.queries import queue_key
from mes.state.tables import QUEUE_ORDER, QUEUE_WAITING, print_jobs, printer_status, printers

# Estimates are made for this many jobs at the head of the queue; later ones have none.
ESTIMATE_DEPTH = 500
QueueKey = tuple[int, float, str]

_ranked = func.coalesce(print_jobs.c.queue_rank, print_jobs.c.created_at)


def _after(key: QueueKey) -> ColumnElement[bool]:
    """Jobs after `key` in queue order."""
    priority, rank, job_id = key
    return or_(print_jobs.c.priority < priority,
               and_(print_jobs.c.priority == priority,
                    or_(_ranked > rank, and_(_ranked == rank, print_jobs.c.id > job_id))))


def _before(key: QueueKey) -> ColumnElement[bool]:
    priority, rank, job_id = key
    return or_(print_jobs.c.priority > priority,
               and_(print_jobs.c.priority == priority,
                    or_(_ranked < rank, and_(_ranked == rank, print_jobs.c.id < job_id))))


def cursor_key(job: Mapping[str, Any]) -> QueueKey:
    """The key a page of the queue goes on after (priority, rank, id)."""
    negated, rank, job_id = queue_key(dict(job))
    return (-negated, rank, job_id)


def ahead_of(conn: Connection, job: Mapping[str, Any]) -> int:
    """How many waiting jobs come before `job`."""
    return int(conn.execute(select(func.count()).select_from(print_jobs).where(
        QUEUE_WAITING, _before(cursor_key(job)))).scalar_one())


def queue_page(conn: Connection, owner_id: str | None, after: QueueKey | None,
               limit: int) -> list[dict[str, Any]]:
    """Up to `limit` waiting jobs (of `owner_id` only, when given) in queue order after the
    key `after`, each with its `position` in the whole queue (1: next)."""
    query = select(print_jobs).where(QUEUE_WAITING).order_by(*QUEUE_ORDER).limit(limit)
    if owner_id is not None:
        query = query.where(print_jobs.c.owner_id == owner_id)
    if after is not None:
        query = query.where(_after(after))
    rows = [dict(r._mapping) for r in conn.execute(query)]
    if not rows:
        return rows
    if owner_id is None:
        first = ahead_of(conn, rows[0]) + 1
        for offset, row in enumerate(rows):
            row["position"] = first + offset
        return rows
    # One user's jobs are scattered through the queue: number the whole queue once (up to
    # the page's last job) rather than count ahead of each job.
    numbered = select(print_jobs.c.id, func.row_number().over(order_by=QUEUE_ORDER)
                      .label("position")).where(QUEUE_WAITING, or_(
                          _before(cursor_key(rows[-1])), print_jobs.c.id == rows[-1]["id"]))
    wanted = {row["id"] for row in rows}
    positions = {r.id: r.position for r in conn.execute(numbered) if r.id in wanted}
    for row in rows:
        row["position"] = positions[row["id"]]
    return rows


def queue_head(conn: Connection, depth: int = ESTIMATE_DEPTH) -> list[dict[str, Any]]:
    """The first `depth` waiting jobs in queue order."""
    query = select(print_jobs).where(QUEUE_WAITING).order_by(*QUEUE_ORDER).limit(depth)
    return [dict(r._mapping) for r in conn.execute(query)]


def printers_free_at(conn: Connection, now: float) -> dict[str, tuple[str | None,
                                                                      float | None]]:
    """Every printer's loaded spool and when it can take its next job (None: not known)."""
    busy = {row.printer_id for row in conn.execute(
        select(print_jobs.c.assigned_printer_id.label("printer_id")).where(
            print_jobs.c.status == "Queued", print_jobs.c.phase.is_not(None)))}
    query = select(printers.c.id, printers.c.filament_id, printers.c.worker,
                   printers.c.bed_clear, printers.c.reserved_until, printers.c.reserved_by,
                   printers.c.attention, printer_status.c.state, printer_status.c.time_left,
                   printer_status.c.observed_at).select_from(
        printers.outerjoin(printer_status, printer_status.c.printer_id == printers.c.id))
    free: dict[str, tuple[str | None, float | None]] = {}
    for row in conn.execute(query):
        free[row.id] = (row.filament_id, _free_at(dict(row._mapping), row.id in busy, now))
    return free


def _free_at(row: Mapping[str, Any], starting: bool, now: float) -> float | None:
    if not row["worker"] or row["attention"] is not None or starting:
        return None
    state = row["state"]
    if state == "printing":
        left = row["time_left"]
        return None if left is None else max(now, row["observed_at"] + left)
    if state not in ("idle", "finished") or not row["bed_clear"]:
        return None
    if is_reserved(dict(row), now):
        until = row["reserved_until"]
        return None if until is None else float(until)
    return now


def estimated_starts(head: Sequence[Mapping[str, Any]],
                     free: Mapping[str, tuple[str | None, float | None]],
                     durations: Mapping[str, float | None]) -> dict[str, float | None]:
    """When each job of `head` (in queue order) should start: on the printer it names, or
    on the printer with its spool loaded that is free first (ties: the lower id). A printer
    that takes a job is free again after the job's duration (`durations` by job id; None
    or absent: not known). Jobs waiting for approval or without a file never start."""
    free_at = {pid: at for pid, (_, at) in free.items()}
    starts: dict[str, float | None] = {}
    for job in head:
        starts[job["id"]] = None
        if job.get("approval") == "pending" or job.get("file_id") is None:
            continue
        if job.get("printer_id"):
            candidates = [job["printer_id"]] if job["printer_id"] in free else []
        else:
            candidates = [pid for pid, (spool, _) in free.items()
                          if spool is not None and spool == job.get("filament_id")]
        known = sorted((at, pid) for pid in candidates
                       if (at := free_at.get(pid)) is not None)
        if not known:
            continue
        at, chosen = known[0]
        starts[job["id"]] = at
        length = durations.get(job["id"])
        free_at[chosen] = None if length is None else at + length
    return starts
