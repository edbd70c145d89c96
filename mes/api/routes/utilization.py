"""`/api/v1/utilization`: hours per printer state, jobs ended and filament used, in a window."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field

from mes.api.auth import authenticated_router
from mes.api.deps import NodeDep, read
from mes.api.errors import ApiError
from mes.api.schemas import Text200, Timestamp
from mes.state import utilization

router = authenticated_router("/utilization", "utilization")

DEFAULT_WINDOW = 24 * 3600.0
MAX_WINDOW_DAYS = 366
# Bounds of an accepted time (the years 1970 to 9999).
_EARLIEST, _LATEST = 0.0, 253_402_300_799.0


class Hours(BaseModel):
    """Hours in each state within the window."""

    printing: float
    paused: float
    idle: float
    offline: float
    error: float


class JobCounts(BaseModel):
    """Jobs that ended within the window."""

    done: int
    failed: int = Field(description="running prints the farm ended: printer error, or the "
                        "print disappeared from the printer")
    rejected: int = Field(description="of `canceled`, those an operator refused before "
                          "they ran")
    canceled: int = Field(description="canceled by a person (or rejected), running or not")


class Figures(BaseModel):
    """Hours, the share of tracked time spent printing, jobs and filament."""

    hours: Hours
    utilization: float | None = Field(description="printing hours / tracked hours (null: "
                                      "no tracked time)")
    jobs: JobCounts
    filament_grams: int = Field(description="charged to spools by the done jobs")


class PrinterFigures(Figures):
    """One printer's figures."""

    printer_id: str
    group: str | None
    exists: bool = Field(description="false: the printer was deleted since")


class GroupFigures(Figures):
    """One group's figures (group null: printers without a group)."""

    group: str | None
    printers: int


class TotalFigures(Figures):
    """The whole farm's (or the asked group's) figures."""

    printers: int


class UtilizationOut(BaseModel):
    """The report for one window."""

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    group: str | None
    printers: list[PrinterFigures]
    groups: list[GroupFigures]
    total: TotalFigures


def _seconds(moment: datetime | None, name: str) -> float | None:
    if moment is None:
        return None
    try:
        value = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, OSError, ValueError):
        value = -1.0
    if not _EARLIEST <= value <= _LATEST:
        raise ApiError(422, "invalid_time", f"{name} must lie between 1970 and 9999", name)
    return value


@router.get("", response_model=UtilizationOut, response_model_by_alias=True)
async def get_utilization(
    node: NodeDep,
    start: Annotated[Timestamp | None, Query(
        alias="from", description="window start (ISO 8601, naive means UTC, or Unix seconds); "
        "default: 24 hours before `to`")] = None,
    end: Annotated[Timestamp | None, Query(
        alias="to", description="window end, exclusive (ISO 8601 or Unix seconds); "
        "default: now")] = None,
    group: Annotated[Text200 | None, Query(description="only the printers of this group")
                     ] = None,
) -> Any:
    """Per printer, per group and in total: hours printing, paused, idle, offline and in
    error, jobs done, failed and canceled, and grams of filament used, within [from, to)
    (at most 366 days). Any signed-in user may read it: it holds no personal data."""
    now = time.time()
    to_ts = _seconds(end, "to")
    from_ts = _seconds(start, "from")
    to_ts = now if to_ts is None else to_ts
    from_ts = to_ts - DEFAULT_WINDOW if from_ts is None else from_ts
    if to_ts <= from_ts:
        raise ApiError(422, "invalid_window", "`to` must be later than `from`", "to")
    if to_ts - from_ts > MAX_WINDOW_DAYS * 86400:
        raise ApiError(422, "window_too_long",
                       f"the window may span at most {MAX_WINDOW_DAYS} days", "from")
    figures = await read(node, lambda c: utilization.report(c, from_ts, to_ts, now, group))
    return {"from": datetime.fromtimestamp(from_ts, UTC),
            "to": datetime.fromtimestamp(to_ts, UTC), "group": group, **figures}
