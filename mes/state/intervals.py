"""Printer state intervals, kept by apply: how long each printer spent in each state.

A printer's state for utilisation is one of UTILIZATION_STATES, derived from the replicated
state alone (its last reported status and whether it waits for an operator: see
`state_expression`), so every node records the same intervals. Commands that may change it
call `record_states` inside apply: it closes the printer's open interval at the command's
time and opens one in the new state when (and only when) the state changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, case, insert, literal, or_, select, update

from mes.state.context import ApplyContext
from mes.state.tables import printer_state_intervals, printer_status, printers

UTILIZATION_STATES = ("printing", "paused", "idle", "offline", "error")
# Up to this many printers are looked up by id; more (a telemetry batch) by one pass over all.
BY_ID_LIMIT = 64

_iv = printer_state_intervals


def state_expression() -> ColumnElement[str]:
    """SQL for the state a printer counts as, over `printers` outer-joined with
    `printer_status`: its reported state, except that never reported counts as offline,
    finished as idle, and waiting for an operator (attention) as error unless it prints."""
    reported = printer_status.c.state
    return case(
        (and_(printers.c.attention.is_not(None), or_(
            reported.is_(None), reported.not_in(("printing", "paused")))), literal("error")),
        (reported == "finished", literal("idle")),
        (reported.in_(("printing", "paused", "idle", "offline", "error")), reported),
        else_=literal("offline"))


def record_states(ctx: ApplyContext, printer_ids: Iterable[str]) -> None:
    """Bring the open interval of each of these printers in line with its current state:
    close it at `ctx.ts` and open one in the new state when the state changed (or there was
    none). Deterministic: reads only the replicated state; one query returns the changes."""
    ids = sorted(set(printer_ids))
    if not ids:
        return
    state = state_expression().label("state")
    query = (select(printers.c.id, state, _iv.c.state.label("open_state"))
             .select_from(printers
                          .outerjoin(printer_status, printer_status.c.printer_id == printers.c.id)
                          .outerjoin(_iv, and_(_iv.c.printer_id == printers.c.id,
                                               _iv.c.ended_at.is_(None))))
             .where(or_(_iv.c.state.is_(None), _iv.c.state != state_expression())))
    if len(ids) <= BY_ID_LIMIT:
        query = query.where(printers.c.id.in_(ids))
    wanted = set(ids)
    changes = sorted((row.id, row.state, row.open_state) for row in ctx.conn.execute(query)
                     if row.id in wanted)
    closing = [pid for pid, _, open_state in changes if open_state is not None]
    if closing:
        ctx.conn.execute(update(_iv).where(_iv.c.ended_at.is_(None), _iv.c.printer_id.in_(closing))
                         .values(ended_at=ctx.ts))
    if changes:
        ctx.conn.execute(insert(_iv), [
            {"printer_id": pid, "state": new, "started_at": ctx.ts, "ended_at": None}
            for pid, new, _ in changes])


def close_interval(ctx: ApplyContext, printer_id: str) -> None:
    """End a (deleted) printer's open interval at `ctx.ts`; its past intervals stay."""
    ctx.conn.execute(update(_iv).where(_iv.c.printer_id == printer_id, _iv.c.ended_at.is_(None))
                     .values(ended_at=ctx.ts))
