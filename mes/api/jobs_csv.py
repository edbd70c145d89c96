"""Print jobs as a CSV file: the history a farm hands to a spreadsheet.

Read a page of 1,000 at a time (each page with its endings in the same read), the newest
first, at most EXPORT_MAX rows. A cell that a spreadsheet would run as a formula (it starts
with =, +, -, @, a tab or a carriage return) is written with a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mes.api.deps import read
from mes.app.ports import Farm
from mes.state import listing
from mes.state.job_endings import endings

EXPORT_MAX = 100_000
PAGE = 1_000
COLUMNS = ("id", "file", "status", "outcome", "outcome_message", "owner", "printer", "spool",
           "grams", "created_at", "started_at", "ended_at", "duration_s")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


async def jobs_csv(node: Farm, where: listing.JobFilter) -> str:
    """The CSV text of every job `where` matches, newest first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    after: tuple[float, str] | None = None
    written = 0
    while written < EXPORT_MAX:
        size = min(PAGE, EXPORT_MAX - written)

        def page_with_endings(conn: Any, after: tuple[float, str] | None = after,
                              size: int = size) -> tuple[list[dict[str, Any]],
                                                         dict[str, dict[str, Any]]]:
            jobs = listing.jobs_page(conn, where, after, size, newest_first=True)
            return jobs, endings(conn, jobs)

        jobs, ends = await read(node, page_with_endings)
        for job in jobs:
            writer.writerow([_safe(v) for v in _row(job, ends.get(job["id"]))])
        written += len(jobs)
        if len(jobs) < size:
            break
        after = (jobs[-1]["created_at"], jobs[-1]["id"])
    return out.getvalue()


def _row(job: dict[str, Any], ended: dict[str, Any] | None) -> Sequence[Any]:
    started = ended.get("started_at") if ended else None
    at = ended.get("at") if ended else None
    duration = round(at - started, 1) if at is not None and started is not None else None
    return (job["id"], job["filepath"], job["status"], ended["kind"] if ended else "",
            ended["message"] if ended else "", job.get("owner_id") or "",
            job.get("assigned_printer_id") or job.get("printer_id") or "",
            job.get("filament_id") or "", job["print_weight_in_grams"],
            _iso(job["created_at"]), _iso(started), _iso(at),
            "" if duration is None else duration)


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value
