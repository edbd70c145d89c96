"""Jobs as the API shows them: each with why it waits (`hold`) or why it ended (`ended`),
read in one go per answer."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection

from mes.api.deps import read
from mes.app.ports import Farm
from mes.state import queries
from mes.state.holds import FarmView, hold_of
from mes.state.job_endings import ENDED, endings

_WAITING = ("Queued", "Running")
# Up to this many waiting jobs that each name their printer, the view is read on the event
# loop: a bounded read by id. Others (a spool loaded in any number of printers, a page of
# jobs) are read on a read thread.
INLINE_JOBS = 2


def farm_view(conn: Connection, jobs: list[dict[str, Any]]) -> FarmView:
    """The printers `jobs` can go to (named, or with their spool loaded), with their last
    statuses and active jobs: what deciding their holds needs, and no more."""
    named = {j["printer_id"] for j in jobs if j.get("printer_id")}
    spools = {j["filament_id"] for j in jobs if not j.get("printer_id") and j.get("filament_id")}
    rows = queries.printers_named_or_loaded(conn, named, spools)
    found = {p["id"]: p for p in queries.with_drive(conn, rows)}
    statuses = queries.printer_statuses(conn, found)
    busy = {pid: job["id"] for pid, job in queries.active_jobs_by_printer(conn, found).items()}
    return FarmView(found, statuses, busy, time.time())


async def with_holds(node: Farm, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`jobs`, each with its `hold` ({code, message}, or None when it does not wait) and
    its `ended` ({kind, message, by}, or None while it has not ended)."""
    waiting = [j for j in jobs if j["status"] in _WAITING]
    ended = [j for j in jobs if j["status"] in ENDED]
    ends = await read(node, lambda c: endings(c, ended)) if ended else {}
    view = None
    if waiting and len(waiting) <= INLINE_JOBS and all(j.get("printer_id") for j in waiting):
        # A few rows by id (about 0.2 ms): cheaper here than a trip to a read thread, which
        # cost a write's answer about 1 ms on a busy interpreter (issue 20 §1).
        view = node.read_now(lambda c: farm_view(c, waiting))
    elif waiting:
        view = await read(node, lambda c: farm_view(c, waiting))
    for job in jobs:
        hold = hold_of(job, view) if view is not None else None
        job["hold"] = hold.as_dict() if hold else None
        job["ended"] = ends.get(job["id"])
    return jobs


async def with_hold(node: Farm, job: dict[str, Any]) -> dict[str, Any]:
    """One job with its `hold`."""
    return (await with_holds(node, [job]))[0]
