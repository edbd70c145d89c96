"""Jobs as the API shows them: each with why it waits (`hold`), read in one go per answer."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, or_, select

from mes.api.deps import read
from mes.app.ports import Farm
from mes.state import queries
from mes.state.holds import FarmView, hold_of
from mes.state.queries import printer_row
from mes.state.tables import printer_status, printers

_WAITING = ("Queued", "Running")


def farm_view(conn: Connection, jobs: list[dict[str, Any]]) -> FarmView:
    """The printers `jobs` can go to (named, or with their spool loaded), with their last
    statuses and active jobs: what deciding their holds needs, and no more."""
    named = {j["printer_id"] for j in jobs if j.get("printer_id")}
    spools = {j["filament_id"] for j in jobs if not j.get("printer_id") and j.get("filament_id")}
    rows = conn.execute(select(printers).where(
        or_(printers.c.id.in_(named), printers.c.filament_id.in_(spools))))
    found = {p["id"]: p for p in queries.with_drive(conn, list(map(printer_row, rows)))}
    statuses = {r.printer_id: dict(r._mapping) for r in conn.execute(
        select(printer_status).where(printer_status.c.printer_id.in_(found)))}
    busy = {pid: job["id"] for pid, job in queries.active_jobs_by_printer(conn, found).items()}
    return FarmView(found, statuses, busy, time.time())


async def with_holds(node: Farm, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`jobs`, each with its `hold` ({code, message}, or None when it does not wait)."""
    waiting = [j for j in jobs if j["status"] in _WAITING]
    view = await read(node, lambda c: farm_view(c, waiting)) if waiting else None
    for job in jobs:
        hold = hold_of(job, view) if view is not None else None
        job["hold"] = hold.as_dict() if hold else None
    return jobs


async def with_hold(node: Farm, job: dict[str, Any]) -> dict[str, Any]:
    """One job with its `hold`."""
    return (await with_holds(node, [job]))[0]
