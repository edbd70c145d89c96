"""Reads of the web page: a page of printers with their status, current job and spool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, literal, not_, or_, select

from mes.state.listing import contains
from mes.state.tables import (
    filaments,
    print_jobs,
    printer_state_intervals,
    printer_status,
    printers,
    users,
)

UNKNOWN = "unknown"  # the state of a printer no worker has reported on yet
BED_TO_CLEAR = "bed_to_clear"  # a printer whose finished print waits to be taken off
NOT_DRIVEN = "not_driven"  # a printer kept as a record: no worker drives it
ATTENTION = "attention"  # a filter: driven printers in error, offline, held or bed to clear
# Every state a card shows, in the order an overview lists them.
CARD_STATES = ("printing", "paused", "idle", BED_TO_CLEAR, "finished", "error", "offline",
               UNKNOWN, NOT_DRIVEN)
_STATUS = [c for c in printer_status.c if c.name != "printer_id"]
_open = printer_state_intervals.alias("open_interval")


@dataclass(frozen=True)
class CardFilter:
    """Which printers a page shows; None means any. `search`: a piece of the printer's id,
    make, model or group, or of its running job's file or owner (for `jobs_of` only: a
    user's search does not look into other users' jobs)."""

    state: str | None = None
    group: str | None = None
    ids: Sequence[str] | None = None
    search: str | None = None
    jobs_of: str | None = None


def card_state() -> ColumnElement[str]:
    """SQL for the state a printer's card shows, over `printers` outer-joined with
    `printer_status`: not driven, bed to clear (unless it prints), never reported, or the
    reported state."""
    reported = printer_status.c.state
    active = or_(reported == "printing", reported == "paused")
    return case(
        (printers.c.worker.is_(False), literal(NOT_DRIVEN)),
        (and_(printers.c.bed_clear.is_(False), or_(reported.is_(None), not_(active))),
         literal(BED_TO_CLEAR)),
        (reported.is_(None), literal(UNKNOWN)),
        else_=reported)


def _needs_attention() -> ColumnElement[bool]:
    """A driven printer an operator must look at: in error or offline, held, bed to clear."""
    reported = printer_status.c.state
    return and_(printers.c.worker.is_(True), or_(
        reported == "error", reported == "offline", printers.c.attention.is_not(None),
        printers.c.bed_clear.is_(False)))


def _waiting_since() -> ColumnElement[float]:
    """Since when the printer is in its current utilisation state (0 when not known)."""
    return func.coalesce(_open.c.started_at, 0.0)


def _with_status_and_since() -> Any:
    return (printers.outerjoin(printer_status, printer_status.c.printer_id == printers.c.id)
            .outerjoin(_open, and_(_open.c.printer_id == printers.c.id,
                                   _open.c.ended_at.is_(None))))


def _search(text: str, jobs_of: str | None) -> ColumnElement[bool]:
    on = func.coalesce(print_jobs.c.assigned_printer_id, print_jobs.c.printer_id)
    job_matches = or_(contains(print_jobs.c.filepath, text),
                      contains(print_jobs.c.owner_id, text), contains(users.c.name, text))
    running = (select(literal(1))
               .select_from(print_jobs.outerjoin(users, users.c.id == print_jobs.c.owner_id))
               .where(print_jobs.c.status == "Running", on == printers.c.id, job_matches))
    if jobs_of is not None:
        running = running.where(print_jobs.c.owner_id == jobs_of)
    return or_(*(contains(column, text) for column in (
        printers.c.id, printers.c.company, printers.c.model, printers.c.group)),
        running.exists())


def _in_state(state: str) -> ColumnElement[bool]:
    """The grid's state filter (the card states, and `attention`)."""
    reported = printer_status.c.state
    if state == ATTENTION:
        return _needs_attention()
    if state == NOT_DRIVEN:
        return printers.c.worker.is_(False)
    if state == UNKNOWN:
        return reported.is_(None)
    if state == BED_TO_CLEAR:
        return printers.c.bed_clear.is_(False)
    if state == "idle":  # free: its bed is clear as well
        return and_(reported == "idle", printers.c.bed_clear.is_(True))
    return reported == state


def overview(conn: Connection) -> dict[str, Any]:
    """Counts of printers by card state for the farm and per group, how many need
    attention, and one tile per printer (id, group, state, progress, time left, since)."""
    state = card_state().label("state")
    attention = _needs_attention().label("attention")
    query = (select(printers.c.id, printers.c.group, state, attention,
                    printer_status.c.progress, printer_status.c.time_left,
                    _waiting_since().label("since"))
             .select_from(_with_status_and_since()).order_by(printers.c.id))
    farm = dict.fromkeys(CARD_STATES, 0)
    groups: dict[str, dict[str, int]] = {}
    tiles = []
    needs_attention = 0
    for row in conn.execute(query):
        farm[row.state] = farm.get(row.state, 0) + 1
        if row.group:
            per = groups.setdefault(row.group, dict.fromkeys(CARD_STATES, 0))
            per[row.state] = per.get(row.state, 0) + 1
        needs_attention += bool(row.attention)
        tiles.append({"id": row.id, "group": row.group, "state": row.state,
                      "attention": bool(row.attention), "progress": row.progress,
                      "time_left": row.time_left, "since": row.since or None})
    return {"printers": len(tiles), "states": farm, "needs_attention": needs_attention,
            "groups": [{"group": name, "printers": sum(counts.values()), "states": counts}
                       for name, counts in sorted(groups.items())],
            "tiles": tiles}


def printer_cards(conn: Connection, where: CardFilter, after: str | tuple[float, str] | None,
                  limit: int) -> list[dict[str, Any]]:
    """Up to `limit` printers by id after `after`, each with `status` (or None), `job` (its
    running job with the owner's name, or None) and `spool` (the loaded spool, or None)."""
    since = _waiting_since().label("waiting_since")
    query = select(printers, *_STATUS, since).select_from(_with_status_and_since())
    if where.state == ATTENTION:  # who waited longest first
        query = query.order_by(since, printers.c.id)
    else:
        query = query.order_by(printers.c.id)
    if where.state is not None:
        query = query.where(_in_state(where.state))
    if where.group is not None:
        query = query.where(printers.c.group == where.group)
    if where.ids is not None:
        query = query.where(printers.c.id.in_(list(where.ids)))
    if where.search:
        query = query.where(_search(where.search, where.jobs_of))
    if isinstance(after, tuple):  # (waiting_since, id): the attention order
        query = query.where(or_(since > after[0], and_(since == after[0],
                                                       printers.c.id > after[1])))
    elif after is not None:
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
        data["waiting_since"] = data["waiting_since"] or None
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
