"""What the OPC UA address space shows of the applied state, read in few queries.

Query functions for `StateMachine.read` (one read transaction each): the whole farm for a
build, or only the printers, jobs, spools and job history entries a pass needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, func, select

from mes.state import queries
from mes.state.tables import filaments, job_history, print_jobs, printer_status, printers

# How many finished (Done or Canceled) jobs stay visible under PrintFarm/Jobs.
RECENT_JOBS = 100


@dataclass
class PrinterView:
    """What one printer's nodes show: its row, last status, current job and loaded spool."""

    printer: dict[str, Any]
    status: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    spool: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.printer["id"])

    @property
    def name(self) -> str:
        """The browse name: OPCUA name if set, else the printer's id."""
        return str(self.printer.get("opcua_name") or self.printer["id"])


@dataclass
class FarmState:
    """The part of the applied state the address space shows, read in one transaction."""

    printers: dict[str, PrinterView] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    filaments: dict[str, dict[str, Any]] = field(default_factory=dict)
    history_seq: int = 0


def _job_window(conn: Connection, recent: int) -> dict[str, dict[str, Any]]:
    active = select(print_jobs).where(print_jobs.c.status.in_(queries.ACTIVE_STATUSES))
    ended = (select(print_jobs).where(print_jobs.c.status.not_in(queries.ACTIVE_STATUSES))
             .order_by(print_jobs.c.updated_at.desc(), print_jobs.c.id.desc()).limit(recent))
    jobs = {r.id: dict(r._mapping) for r in conn.execute(active)}
    jobs.update((r.id, dict(r._mapping)) for r in conn.execute(ended))
    return jobs


def last_history_seq(conn: Connection) -> int:
    """The newest job history entry's sequence number (0 without any)."""
    return int(conn.execute(select(func.max(job_history.c.seq))).scalar() or 0)


def read_farm(conn: Connection, recent: int = RECENT_JOBS) -> FarmState:
    """Everything the address space shows (a query for StateMachine.read)."""
    spools = {f["id"]: f for f in queries.list_filaments(conn)}
    statuses = {r.printer_id: dict(r._mapping) for r in conn.execute(select(printer_status))}
    active = queries.active_jobs_by_printer(conn)
    rows = queries.list_printers(conn)
    active.update(_finished_on_bed(conn, rows, active))
    views = {p["id"]: PrinterView(p, statuses.get(p["id"]), active.get(p["id"]),
                                     spools.get(p["filament_id"] or ""))
                for p in rows}
    return FarmState(views, _job_window(conn, recent), spools, last_history_seq(conn))


def read_printers(conn: Connection, ids: Iterable[str]) -> dict[str, PrinterView | None]:
    """The views of some printers (None for a printer that no longer exists), in a few
    queries whatever their number."""
    wanted = sorted(set(ids))
    found: dict[str, PrinterView | None] = dict.fromkeys(wanted)
    for chunk in _chunks(wanted, 500):
        rows = [queries.printer_row(r) for r in conn.execute(
            select(printers).where(printers.c.id.in_(chunk)))]
        statuses = {r.printer_id: dict(r._mapping) for r in conn.execute(
            select(printer_status).where(printer_status.c.printer_id.in_(chunk)))}
        active = queries.active_jobs_by_printer(conn, chunk)
        active.update(_finished_on_bed(conn, rows, active))
        spool_ids = sorted({r["filament_id"] for r in rows if r["filament_id"]})
        spools = {r.id: dict(r._mapping) for r in conn.execute(
            select(filaments).where(filaments.c.id.in_(spool_ids)))}
        for row in rows:
            found[row["id"]] = PrinterView(row, statuses.get(row["id"]), active.get(row["id"]),
                                           spools.get(row["filament_id"] or ""))
    return found


def _finished_on_bed(conn: Connection, rows: list[dict[str, Any]],
                     active: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each printer without an active job whose bed awaits clearing: the job it
    finished last (a robot cell sees which part waits on the bed, at 100 %). One query per
    500 printers."""
    waiting = sorted(r["id"] for r in rows
                     if r["id"] not in active and not r.get("bed_clear", True))
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(waiting, 500):
        newest = func.row_number().over(
            partition_by=print_jobs.c.assigned_printer_id,
            order_by=(print_jobs.c.updated_at.desc(), print_jobs.c.id.desc())).label("newest")
        done = (select(print_jobs, newest)
                .where(print_jobs.c.assigned_printer_id.in_(chunk),
                       print_jobs.c.status == "Done").subquery())
        query = select(*(done.c[c.name] for c in print_jobs.c)).where(done.c.newest == 1)
        for row in conn.execute(query):
            found[row.assigned_printer_id] = dict(row._mapping)
    return found


def read_statuses(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Some printers' last statuses by printer id (printers without one left out)."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids)), 500):
        found.update((r.printer_id, dict(r._mapping)) for r in conn.execute(
            select(printer_status).where(printer_status.c.printer_id.in_(chunk))))
    return found


def read_jobs(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Some jobs by id (missing ones left out)."""
    return _rows_by_id(conn, print_jobs, ids)


def read_filaments(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Some spools by id (missing ones left out)."""
    return _rows_by_id(conn, filaments, ids)


def _rows_by_id(conn: Connection, table: Table, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids)), 500):
        found.update((r.id, dict(r._mapping)) for r in conn.execute(
            select(table).where(table.c.id.in_(chunk))))
    return found


def read_history(conn: Connection, after: int, limit: int = 10_000) -> list[dict[str, Any]]:
    """Job status changes with a sequence number above `after`, oldest first."""
    query = (select(job_history).where(job_history.c.seq > after)
             .order_by(job_history.c.seq).limit(limit))
    return [dict(r._mapping) for r in conn.execute(query)]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
