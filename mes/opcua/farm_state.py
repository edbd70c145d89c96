"""What the OPC UA address space shows of the applied state, read in few queries.

Query functions for `StateMachine.read` (one read transaction each): the whole farm for a
build, or only the printers, jobs, spools and job history entries a pass needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from mes.state import opcua_reads, queries
from mes.state.opcua_reads import last_history_seq as last_history_seq
from mes.state.opcua_reads import read_history as read_history

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


def read_farm(conn: Connection, recent: int = RECENT_JOBS) -> FarmState:
    """Everything the address space shows (a query for StateMachine.read)."""
    spools = {f["id"]: f for f in queries.list_filaments(conn)}
    statuses = queries.printer_statuses(conn)
    active = queries.active_jobs_by_printer(conn)
    rows = queries.list_printers(conn)
    active.update(_finished_on_bed(conn, rows, active))
    views = {p["id"]: PrinterView(p, statuses.get(p["id"]), active.get(p["id"]),
                                     spools.get(p["filament_id"] or ""))
                for p in rows}
    return FarmState(views, opcua_reads.job_window(conn, recent), spools, last_history_seq(conn))


def read_printers(conn: Connection, ids: Iterable[str]) -> dict[str, PrinterView | None]:
    """The views of some printers (None for a printer that no longer exists), in a few
    queries whatever their number."""
    wanted = sorted(set(ids))
    found: dict[str, PrinterView | None] = dict.fromkeys(wanted)
    for chunk in _chunks(wanted, 500):
        rows = queries.printers_with_ids(conn, chunk)
        statuses = queries.printer_statuses(conn, chunk)
        active = queries.active_jobs_by_printer(conn, chunk)
        active.update(_finished_on_bed(conn, rows, active))
        spool_ids = sorted({r["filament_id"] for r in rows if r["filament_id"]})
        spools = queries.filaments_with_ids(conn, spool_ids)
        for row in rows:
            found[row["id"]] = PrinterView(row, statuses.get(row["id"]), active.get(row["id"]),
                                           spools.get(row["filament_id"] or ""))
    return found


def _finished_on_bed(conn: Connection, rows: list[dict[str, Any]],
                     active: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each printer without an active job whose bed awaits clearing: the print that
    ended there last, Done (at 100 %) or canceled or lost while printing, so a robot cell
    sees which part waits on the bed. None for a printer held for a print that was not the
    farm's (its `attention` says why): what is on that bed is no job of ours. One query per
    500 printers."""
    waiting = sorted(r["id"] for r in rows
                     if r["id"] not in active and not r.get("bed_clear", True)
                     and not r.get("attention"))
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(waiting, 500):
        found.update(opcua_reads.jobs_left_on_beds(conn, chunk))
    return found


def read_statuses(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Some printers' last statuses by printer id (printers without one left out)."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids)), 500):
        found.update(queries.printer_statuses(conn, chunk))
    return found


def read_jobs(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Some jobs by id (missing ones left out)."""
    return _by_id(queries.jobs_with_ids, conn, ids)


def read_filaments(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Some spools by id (missing ones left out)."""
    return _by_id(queries.filaments_with_ids, conn, ids)


def _by_id(read: Callable[[Connection, list[str]], dict[str, dict[str, Any]]],
           conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids)), 500):
        found.update(read(conn, chunk))
    return found


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
