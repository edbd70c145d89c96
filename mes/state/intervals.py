"""Printer state intervals, kept by apply: how long each printer spent in each state.

A printer's state for utilisation is one of UTILIZATION_STATES, derived from the replicated
state alone (its last reported status and whether it waits for an operator: see
`state_expression`), so every node records the same intervals. Commands that may change it
call `record_states` inside apply: it closes the printer's open interval at the command's
time and opens one in the new state when (and only when) the state changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, insert, literal, or_, select, update

from mes.state.context import ApplyContext
from mes.state.prepared import FEW, Prepared
from mes.state.tables import printer_state_intervals, printer_status, printers

UTILIZATION_STATES = ("printing", "paused", "idle", "offline", "error")
# Up to FEW (mes.state.prepared) printers are looked up one by one, up to this many by one
# IN query, more (a telemetry batch) by one pass over all.
BY_ID_LIMIT = 64

_iv = printer_state_intervals


def state_expression() -> ColumnElement[str]:
    """SQL for the state a printer counts as, over `printers` outer-joined with
    `printer_status`: its reported state, except that never reported counts as offline,
    finished as idle, and waiting for an operator (attention) as error unless it prints."""
    reported = printer_status.c.state
    # Comparisons spelled out rather than IN lists: the same truth (NULL included), and the
    # statement can be prepared (mes.state.prepared takes no IN list).
    return case(
        (and_(printers.c.attention.is_not(None), or_(
            reported.is_(None), and_(reported != "printing", reported != "paused"))),
         literal("error")),
        (reported == "finished", literal("idle")),
        (or_(*(reported == s for s in ("printing", "paused", "idle", "offline", "error"))),
         reported),
        else_=literal("offline"))


def _changes() -> Any:
    """Each printer whose state differs from its open interval's (or has none): id, new
    state, open interval's state."""
    state = state_expression()
    return (select(printers.c.id, state.label("state"), _iv.c.state.label("open_state"))
            .select_from(printers
                         .outerjoin(printer_status, printer_status.c.printer_id == printers.c.id)
                         .outerjoin(_iv, and_(_iv.c.printer_id == printers.c.id,
                                              _iv.c.ended_at.is_(None))))
            .where(or_(_iv.c.state.is_(None), _iv.c.state != state)))


_CHANGES = _changes()
_CHANGES_ALL = Prepared(_CHANGES)
_CHANGE_OF = Prepared(_CHANGES.where(printers.c.id == bindparam("id")))
_CLOSE = Prepared(update(_iv).where(_iv.c.ended_at.is_(None), _iv.c.printer_id == bindparam("id"))
                  .values(ended_at=bindparam("ts")))
_OPEN = Prepared(insert(_iv))


def record_states(ctx: ApplyContext, printer_ids: Iterable[str]) -> None:
    """Bring the open interval of each of these printers in line with its current state:
    close it at `ctx.ts` and open one in the new state when the state changed (or there was
    none). Deterministic: reads only the replicated state; one query returns the changes."""
    ids = sorted(set(printer_ids))
    if not ids:
        return
    if len(ids) <= FEW:
        rows = [row for pid in ids for row in _CHANGE_OF.run(ctx.conn, {"id": pid}).all()]
    elif len(ids) <= BY_ID_LIMIT:
        rows = list(ctx.conn.execute(_CHANGES.where(printers.c.id.in_(ids))))
    else:
        rows = _CHANGES_ALL.run(ctx.conn).all()
    wanted = set(ids)
    changes = sorted((row.id, row.state, row.open_state) for row in rows if row.id in wanted)
    closing = [pid for pid, _, open_state in changes if open_state is not None]
    _CLOSE.run_many(ctx.conn, [{"id": pid, "ts": ctx.ts} for pid in closing])
    _OPEN.run_many(ctx.conn, [
        {"printer_id": pid, "state": new, "started_at": ctx.ts, "ended_at": None}
        for pid, new, _ in changes])


def close_interval(ctx: ApplyContext, printer_id: str) -> None:
    """End a (deleted) printer's open interval at `ctx.ts`; its past intervals stay."""
    ctx.conn.execute(update(_iv).where(_iv.c.printer_id == printer_id, _iv.c.ended_at.is_(None))
                     .values(ended_at=ctx.ts))
