"""Counts over the whole farm for the metrics scrape: printers by utilisation state and
print jobs by status (one GROUP BY query each)."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from mes.state.intervals import UTILIZATION_STATES, state_expression
from mes.state.jobs import JOB_STATUSES
from mes.state.tables import print_jobs, printer_status, printers


def printers_by_state(conn: Connection) -> dict[str, int]:
    """How many printers are in each utilisation state now (mes.state.intervals)."""
    counts = dict.fromkeys(UTILIZATION_STATES, 0)
    state = state_expression().label("state")
    query = (select(state, func.count())
             .select_from(printers.outerjoin(printer_status,
                                             printer_status.c.printer_id == printers.c.id))
             .group_by(state))
    for name, count in conn.execute(query):
        counts[str(name)] = int(count)
    return counts


def jobs_by_status(conn: Connection) -> dict[str, int]:
    """How many print jobs have each status (one pass over the status index)."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    query = select(print_jobs.c.status, func.count()).group_by(print_jobs.c.status)
    for status, count in conn.execute(query):
        counts[str(status)] = int(count)
    return counts
