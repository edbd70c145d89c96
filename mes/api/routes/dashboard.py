"""`/api/v1/dashboard`: the web page's printer grid, one page per request, and the farm's
overview (counts by state, a tile per printer)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query, Request, Response
from pydantic import BaseModel

from mes.api.auth import Caller, authenticated_router
from mes.api.deps import NodeDep, read
from mes.api.errors import ApiError
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, paged
from mes.api.schemas import FilamentOut, PrinterOut, Text200, Timestamp
from mes.auth.principal import Principal
from mes.state.dashboard import ATTENTION, CardFilter, overview, printer_cards

router = authenticated_router("/dashboard", "dashboard")

CardState = Literal["offline", "idle", "printing", "paused", "finished", "error", "unknown",
                    "bed_to_clear", "not_driven", "attention"]
MAX_IDS = 200


class CardStatus(BaseModel):
    """What the printer reported last."""

    state: str
    nozzle_actual: float | None = None
    nozzle_target: float | None = None
    bed_actual: float | None = None
    bed_target: float | None = None
    file_name: str | None = None
    progress: float | None = None
    time_printed: float | None = None
    time_left: float | None = None
    error: str | None = None
    observed_at: Timestamp | None = None


class CardJob(BaseModel):
    """The printer's running job. A `user` sees another user's job only as `mine: false`."""

    mine: bool
    id: str | None = None
    filepath: str | None = None
    file_id: str | None = None
    phase: str | None = None
    owner_id: str | None = None
    owner_name: str | None = None
    print_weight_in_grams: int | None = None


class PrinterCard(PrinterOut):
    """A printer with its status, running job and loaded spool."""

    status: CardStatus | None
    job: CardJob | None
    spool: FilamentOut | None
    waiting_since: Timestamp | None = None


class Tile(BaseModel):
    """One printer in the overview's density view."""

    id: str
    group: str | None
    state: str
    attention: bool
    progress: float | None
    time_left: float | None
    since: Timestamp | None


class StateCounts(BaseModel):
    """How many printers in each state a card shows."""

    printing: int
    paused: int
    idle: int
    bed_to_clear: int
    finished: int
    error: int
    offline: int
    unknown: int
    not_driven: int


class GroupCounts(BaseModel):
    """One group's printers by state."""

    group: str
    printers: int
    states: StateCounts


class Overview(BaseModel):
    """The farm at a glance."""

    printers: int
    states: StateCounts
    needs_attention: int
    groups: list[GroupCounts]
    tiles: list[Tile]


def _shown_job(job: dict[str, Any] | None, who: Principal) -> dict[str, Any] | None:
    if job is None:
        return None
    mine = job["owner_id"] == who.user_id
    if not (mine or who.staff):
        return {"mine": False}
    return {**job, "mine": mine}


@router.get("/printers", response_model=list[PrinterCard])
async def printer_cards_page(
    request: Request, response: Response, node: NodeDep, who: Caller,
    state: Annotated[CardState | None, Query(
        description="only printers in this state (unknown: never reported; idle: free for a "
        "print, its bed clear; bed_to_clear: waiting for its bed to be cleared; not_driven: "
        "kept as a record; attention: driven printers in error, offline, held or with a bed "
        "to clear, the longest waiting first)")] = None,
    group: Annotated[Text200 | None, Query(description="only printers of this group")] = None,
    q: Annotated[Text200 | None, Query(
        description="a piece of the printer's id, make, model or group, or of its running "
        "job's file name or owner (a `user`: of their own jobs only)")] = None,
    ids: Annotated[list[str] | None, Query(
        alias="id", description=f"only these printers (repeat `id`, at most {MAX_IDS})")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Any:
    """Printers by id with their latest status, running job (and owner) and loaded spool,
    one page at a time, filtered by state and group: what the web page's grid shows."""
    if ids is not None and len(ids) > MAX_IDS:
        raise ApiError(422, "too_many_ids", f"at most {MAX_IDS} ids at once", "id")
    where = CardFilter(state, group, ids, q or None, None if who.staff else who.user_id)
    if state == ATTENTION:  # ordered by how long each has waited
        waited = decode_cursor(cursor, float, str)
        after: str | tuple[float, str] | None = (waited[0], waited[1]) if waited else None
    else:
        by_id = decode_cursor(cursor, str)
        after = by_id[0] if by_id else None
    rows = await read(node, lambda c: printer_cards(c, where, after, limit + 1))
    page = paged(request, response, rows, limit, lambda r: (
        [r["waiting_since"] or 0.0, r["id"]] if state == ATTENTION else [r["id"]]))
    for card in page:
        card["job"] = _shown_job(card["job"], who)
    return page


@router.get("/overview", response_model=Overview)
async def farm_overview(node: NodeDep, _: Caller) -> Any:
    """Printers by state for the farm and per group (each a filter of the grid: `state`),
    how many need an operator, and one tile per printer for a density view."""
    return await read(node, overview)
