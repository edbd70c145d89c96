"""Printer state intervals, kept by apply: how long each printer spent in each state.

A printer's state for utilisation is one of UTILIZATION_STATES, derived from the replicated
state alone (its last reported status and whether it waits for an operator), so every node
records the same intervals. Commands that may change it call `record_states` inside apply:
it closes the printer's open interval at the command's time and opens one in the new state
when (and only when) the state changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert, select, update

from mes.state.context import ApplyContext
from mes.state.tables import printer_state_intervals, printer_status, printers

UTILIZATION_STATES = ("printing", "paused", "idle", "offline", "error")
# Reported printer states (mes.state.farm.PRINTER_STATES) and what they count as.
_FROM_REPORTED = {"printing": "printing", "paused": "paused", "idle": "idle",
                  "finished": "idle", "offline": "offline", "error": "error"}

_intervals = printer_state_intervals


def utilization_state(reported: str | None, attention: str | None) -> str:
    """The state a printer counts as: never reported is offline; a printer that waits for
    an operator (attention) counts as error unless it prints; finished counts as idle."""
    state = _FROM_REPORTED.get(reported or "", "offline")
    if attention and state not in ("printing", "paused"):
        return "error"
    return state


def record_states(ctx: ApplyContext, printer_ids: Iterable[str]) -> None:
    """Bring each printer's open interval in line with its current state (deleted printers:
    close it). Deterministic: reads only the replicated state, times are `ctx.ts`."""
    ids = sorted(set(printer_ids))
    if not ids:
        return
    current = {row.id: utilization_state(row.state, row.attention) for row in ctx.conn.execute(
        select(printers.c.id, printers.c.attention, printer_status.c.state)
        .select_from(printers.outerjoin(printer_status,
                                        printer_status.c.printer_id == printers.c.id))
        .where(printers.c.id.in_(ids)))}
    open_now = {row.printer_id: row.state for row in ctx.conn.execute(
        select(_intervals.c.printer_id, _intervals.c.state)
        .where(_intervals.c.ended_at.is_(None), _intervals.c.printer_id.in_(ids)))}
    closing = [pid for pid, state in open_now.items() if current.get(pid) != state]
    opening = [pid for pid in ids if pid in current and open_now.get(pid) != current[pid]]
    if closing:
        ctx.conn.execute(update(_intervals)
                         .where(_intervals.c.ended_at.is_(None),
                                _intervals.c.printer_id.in_(sorted(closing)))
                         .values(ended_at=ctx.ts))
    if opening:
        ctx.conn.execute(insert(_intervals), [
            {"printer_id": pid, "state": current[pid], "started_at": ctx.ts, "ended_at": None}
            for pid in opening])
