"""The reads only the OPC UA address space makes: its window of jobs, the job each waiting
bed holds, and the job history it has not shown yet."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, func, select

from mes.state.queries import ACTIVE_STATUSES
from mes.state.tables import (
    filaments,
    job_history,
    print_jobs,
    printer_state_intervals,
    printer_status,
    printers,
)


def job_window(conn: Connection, recent: int) -> dict[str, dict[str, Any]]:
    """Every active (Queued or Running) job and the `recent` jobs that ended last, by id."""
    active = select(print_jobs).where(print_jobs.c.status.in_(ACTIVE_STATUSES))
    ended = (select(print_jobs).where(print_jobs.c.status.not_in(ACTIVE_STATUSES))
             .order_by(print_jobs.c.updated_at.desc(), print_jobs.c.id.desc()).limit(recent))
    jobs = {r.id: dict(r._mapping) for r in conn.execute(active)}
    jobs.update((r.id, dict(r._mapping)) for r in conn.execute(ended))
    return jobs


def jobs_left_on_beds(conn: Connection, printer_ids: Collection[str]
                      ) -> dict[str, dict[str, Any]]:
    """The job each of these printers printed last, by printer id, in one query: the newest
    print that ended there (Done, canceled or lost while printing), which is what left its
    bed to be cleared (no job is claimed on a printer until its bed is cleared). Queued jobs
    canceled before they started left nothing on a bed and are not counted."""
    newest = func.row_number().over(
        partition_by=print_jobs.c.assigned_printer_id,
        order_by=job_history.c.seq.desc()).label("newest")
    ended = (select(print_jobs, newest)
             .join(job_history, job_history.c.job_id == print_jobs.c.id)
             .where(print_jobs.c.assigned_printer_id.in_(printer_ids),
                    job_history.c.from_status == "Running",
                    job_history.c.to_status.in_(("Done", "Canceled"))).subquery())
    query = select(*(ended.c[c.name] for c in print_jobs.c)).where(ended.c.newest == 1)
    return {row.assigned_printer_id: dict(row._mapping) for row in conn.execute(query)}


def last_history_seq(conn: Connection) -> int:
    """The newest job history entry's sequence number (0 without any)."""
    return int(conn.execute(select(func.max(job_history.c.seq))).scalar() or 0)


def read_history(conn: Connection, after: int, limit: int = 10_000) -> list[dict[str, Any]]:
    """Job status changes with a sequence number above `after`, oldest first."""
    query = (select(job_history).where(job_history.c.seq > after)
             .order_by(job_history.c.seq).limit(limit))
    return [dict(r._mapping) for r in conn.execute(query)]


def history_between(conn: Connection, start: float | None, end: float | None, after: int,
                    limit: int, job_id: str | None = None, printer_id: str | None = None,
                    ) -> list[dict[str, Any]]:
    """Job status changes at times in [start, end] with a sequence number above `after`,
    oldest first, each with its job's printer (`printer_id`: assigned, else asked for) and
    what its ISA-95 job order names (`job_...`); only one job's or one printer's when given."""
    printer = func.coalesce(print_jobs.c.assigned_printer_id, print_jobs.c.printer_id)
    query = (select(job_history, printer.label("job_printer_id"),
                    print_jobs.c.filament_id.label("job_filament_id"),
                    print_jobs.c.print_weight_in_grams.label("job_grams"),
                    print_jobs.c.printer_id.label("job_asked_printer_id"),
                    print_jobs.c.assigned_printer_id.label("job_assigned_printer_id"),
                    print_jobs.c.approval.label("job_approval"))
             .join(print_jobs, print_jobs.c.id == job_history.c.job_id)
             .where(job_history.c.seq > after).order_by(job_history.c.seq).limit(limit))
    if start is not None:
        query = query.where(job_history.c.at >= start)
    if end is not None:
        query = query.where(job_history.c.at <= end)
    if job_id is not None:
        query = query.where(job_history.c.job_id == job_id)
    if printer_id is not None:
        query = query.where(printer == printer_id)
    return [dict(r._mapping) for r in conn.execute(query)]


def state_intervals_between(conn: Connection, printer_id: str, start: float | None,
                            end: float | None, after: int, limit: int
                            ) -> list[dict[str, Any]]:
    """The printer's state stretches that began at times in [start, end], with a sequence
    number above `after`, oldest first (the state and when it began)."""
    iv = printer_state_intervals
    query = (select(iv.c.seq, iv.c.state, iv.c.started_at)
             .where(iv.c.printer_id == printer_id, iv.c.seq > after)
             .order_by(iv.c.seq).limit(limit))
    if start is not None:
        query = query.where(iv.c.started_at >= start)
    if end is not None:
        query = query.where(iv.c.started_at <= end)
    return [dict(r._mapping) for r in conn.execute(query)]


def jobs_in_states(conn: Connection, statuses: Collection[str], pending: bool | None,
                   owner_id: str | None, limit: int, printer_id: str | None = None,
                   offset: int = 0) -> list[dict[str, Any]]:
    """The newest `limit` jobs (after the first `offset`) whose status is one of `statuses`
    (`pending`: only those awaiting approval, or only those not; None: both), of `owner_id`
    and of `printer_id` (assigned, else asked for) when given."""
    query = (select(print_jobs).where(print_jobs.c.status.in_(list(statuses)))
             .order_by(print_jobs.c.updated_at.desc(), print_jobs.c.id.desc())
             .limit(limit).offset(offset))
    if pending is not None:
        awaiting = print_jobs.c.approval == "pending"
        query = query.where(awaiting if pending else ~awaiting | print_jobs.c.approval.is_(None))
    if owner_id is not None:
        query = query.where(print_jobs.c.owner_id == owner_id)
    if printer_id is not None:
        query = query.where(func.coalesce(print_jobs.c.assigned_printer_id,
                                          print_jobs.c.printer_id) == printer_id)
    return [dict(r._mapping) for r in conn.execute(query)]


def histories_of(conn: Connection, job_ids: Collection[str]) -> dict[str, list[dict[str, Any]]]:
    """Each job's status changes, oldest first, in one query (at most 1,000 jobs)."""
    found: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
    if not found:
        return found
    query = (select(job_history).where(job_history.c.job_id.in_(list(found)))
             .order_by(job_history.c.seq))
    for row in conn.execute(query):
        found[row.job_id].append(dict(row._mapping))
    return found


def job_order_control(conn: Connection, limit: int) -> dict[str, Any]:
    """What JobOrderControl's variables show: the first `limit` job orders not ended, in
    the order they were submitted (with their printers' states), the printers' ids, the
    spools' ids and their materials."""
    open_jobs = [dict(r._mapping) for r in conn.execute(
        select(print_jobs).where(print_jobs.c.status.in_(("Queued", "Running")))
        .order_by(print_jobs.c.created_at, print_jobs.c.id).limit(limit))]
    assigned = {j["assigned_printer_id"] for j in open_jobs if j["assigned_printer_id"]}
    states = {row.printer_id: row.state for row in conn.execute(
        select(printer_status.c.printer_id, printer_status.c.state)
        .where(printer_status.c.printer_id.in_(sorted(assigned))))} if assigned else {}
    return {"jobs": open_jobs, "printer_states": states,
            "printers": list(conn.execute(select(printers.c.id).order_by(printers.c.id))
                             .scalars()),
            "spools": [(row.id, row.type) for row in conn.execute(
                select(filaments.c.id, filaments.c.type).order_by(filaments.c.id))]}


def printer_job_orders(conn: Connection, per_printer: int) -> dict[str, Any]:
    """What each printer's JobOrderControl lists: the first `per_printer` job orders not
    ended of every printer (assigned, else asked for), in the order they were submitted, by
    printer id, with the states of the printers that print one."""
    printer = func.coalesce(print_jobs.c.assigned_printer_id, print_jobs.c.printer_id)
    rank = func.row_number().over(partition_by=printer,
                                  order_by=(print_jobs.c.created_at, print_jobs.c.id))
    ranked = (select(print_jobs, printer.label("job_printer"), rank.label("rank"))
              .where(print_jobs.c.status.in_(("Queued", "Running")), printer.is_not(None))
              .subquery())
    query = (select(ranked).where(ranked.c.rank <= per_printer)
             .order_by(ranked.c.job_printer, ranked.c.rank))
    jobs: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(query):
        job = dict(row._mapping)
        pid = job.pop("job_printer")
        job.pop("rank")
        jobs.setdefault(pid, []).append(job)
    assigned = sorted({j["assigned_printer_id"] for listed in jobs.values() for j in listed
                       if j["assigned_printer_id"]})
    states = {row.printer_id: row.state for row in conn.execute(
        select(printer_status.c.printer_id, printer_status.c.state)
        .where(printer_status.c.printer_id.in_(assigned)))} if assigned else {}
    return {"jobs": jobs, "printer_states": states}
