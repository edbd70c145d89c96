"""Reads of the web page: a page of printers with their status, current job and spool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from mes.state.tables import filaments, print_jobs, printer_status, printers, users

UNKNOWN = "unknown"  # the state of a printer no worker has reported on yet
BED_TO_CLEAR = "bed_to_clear"  # a printer whose finished print waits to be taken off
_STATUS = [c for c in printer_status.c if c.name != "printer_id"]


@dataclass(frozen=True)
class CardFilter:
    """Which printers a page shows; None means any."""

    state: str | None = None
    group: str | None = None
    ids: Sequence[str] | None = None


def printer_cards(conn: Connection, where: CardFilter, after: str | None,
                  limit: int) -> list[dict[str, Any]]:
    """Up to `limit` printers by id after `after`, each with `status` (or None), `job` (its
    running job with the owner's name, or None) and `spool` (the loaded spool, or None)."""
    query = (select(printers, *_STATUS)
             .select_from(printers.outerjoin(
                 printer_status, printer_status.c.printer_id == printers.c.id))
             .order_by(printers.c.id))
    if where.state == UNKNOWN:
        query = query.where(printer_status.c.state.is_(None))
    elif where.state == BED_TO_CLEAR:
        query = query.where(printers.c.bed_clear.is_(False))
    elif where.state == "idle":  # free: its bed is clear as well
        query = query.where(printer_status.c.state == "idle", printers.c.bed_clear.is_(True))
    elif where.state is not None:
        query = query.where(printer_status.c.state == where.state)
    if where.group is not None:
        query = query.where(printers.c.group == where.group)
    if where.ids is not None:
        query = query.where(printers.c.id.in_(list(where.ids)))
    if after is not None:
        query = query.where(printers.c.id > after)
    rows = conn.execute(query.limit(limit)).all()
    ids = [r.id for r in rows]
    jobs = _running_jobs(conn, ids)
    spools = _spools(conn, {r.filament_id for r in rows if r.filament_id})
    status_names = {c.name for c in _STATUS}
    cards = []
    for row in rows:
        data = dict(row._mapping)
        status = {name: data.pop(name) for name in status_names}
        data["has_api_key"] = bool(data.pop("api_key"))
        cards.append({**data,
                      "status": status if status["state"] is not None else None,
                      "job": jobs.get(row.id),
                      "spool": spools.get(row.filament_id) if row.filament_id else None})
    return cards


def _running_jobs(conn: Connection, printer_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not printer_ids:
        return {}
    # A job a worker sent has an assigned printer; one set Running by hand (the Raft3D
    # brief's way) runs on the printer it asked for.
    on = func.coalesce(print_jobs.c.assigned_printer_id, print_jobs.c.printer_id)
    query = (select(print_jobs.c.id, print_jobs.c.filepath, print_jobs.c.file_id,
                    print_jobs.c.phase,
                    print_jobs.c.owner_id, print_jobs.c.print_weight_in_grams,
                    users.c.name.label("owner_name"), on.label("on_printer"))
             .select_from(print_jobs.outerjoin(users, users.c.id == print_jobs.c.owner_id))
             .where(print_jobs.c.status == "Running",
                    or_(print_jobs.c.assigned_printer_id.in_(printer_ids),
                        and_(print_jobs.c.assigned_printer_id.is_(None),
                             print_jobs.c.printer_id.in_(printer_ids)))))
    jobs: dict[str, dict[str, Any]] = {}
    for row in conn.execute(query):
        job = dict(row._mapping)
        jobs[job.pop("on_printer")] = job
    return jobs


def _spools(conn: Connection, spool_ids: set[str]) -> dict[str, dict[str, Any]]:
    if not spool_ids:
        return {}
    query = select(filaments).where(filaments.c.id.in_(sorted(spool_ids)))
    return {r.id: dict(r._mapping) for r in conn.execute(query)}
