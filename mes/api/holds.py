"""Jobs as the API shows them: each with why it waits (`hold`), read in one go per answer."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, select

from mes.api.deps import read
from mes.node import FarmNode
from mes.state import queries
from mes.state.holds import FarmView, hold_of
from mes.state.tables import printer_status

_WAITING = ("Queued", "Running")


def farm_view(conn: Connection) -> FarmView:
    """Printers, their last statuses and their active jobs, as hold decisions need them."""
    printers = {p["id"]: p for p in queries.list_printers(conn)}
    statuses = {r.printer_id: dict(r._mapping) for r in conn.execute(select(printer_status))}
    busy = {pid: job["id"] for pid, job in queries.active_jobs_by_printer(conn).items()}
    return FarmView(printers, statuses, busy, time.time())


async def with_holds(node: FarmNode, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`jobs`, each with its `hold` ({code, message}, or None when it does not wait)."""
    view = await read(node, farm_view) if any(j["status"] in _WAITING for j in jobs) else None
    for job in jobs:
        hold = hold_of(job, view) if view is not None else None
        job["hold"] = hold.as_dict() if hold else None
    return jobs


async def with_hold(node: FarmNode, job: dict[str, Any]) -> dict[str, Any]:
    """One job with its `hold`."""
    return (await with_holds(node, [job]))[0]
