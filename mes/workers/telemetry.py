"""Telemetry through Raft: one command per tick for the printers whose status changed
(or was last committed REFRESH_SECONDS ago)."""

from __future__ import annotations

import zlib
from typing import Any

from mes.state.ops import Op
from mes.workers.context import WorkerContext

# An unchanged status is committed again after this many seconds, so that every node knows
# when each printer was last seen (GET /printers/{id}/status `age_seconds`).
REFRESH_SECONDS = 30.0


def refresh_after(printer_id: str) -> float:
    """Seconds after which this printer's unchanged status is committed again: between half
    of REFRESH_SECONDS and all of it, fixed per printer, so that 1,000 printers first seen
    together are not all committed again in the same tick every REFRESH_SECONDS (one
    command of 1,000 rows held the workers' loop for a second)."""
    return REFRESH_SECONDS * (1.0 - (zlib.crc32(printer_id.encode()) % 1000) / 2000)


DEADBAND = {"nozzle_actual": 1.0, "bed_actual": 1.0, "progress": 1.0, "time_printed": 30.0,
            "time_left": 30.0, "nozzle_target": 0.1, "bed_target": 0.1}


def changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether `after` differs from `before` beyond the deadband (any text change counts)."""
    if before is None:
        return True
    for key, value in after.items():
        old = before.get(key)
        band = DEADBAND.get(key)
        if band is None or old is None or value is None:
            if old != value:
                return True
        elif abs(float(value) - float(old)) >= band:
            return True
    return False


class TelemetryFlusher:
    """Remembers what was last committed per printer and commits only the differences."""

    def __init__(self) -> None:
        self._committed: dict[str, dict[str, Any]] = {}
        self._committed_at: dict[str, float] = {}
        self.commands = 0
        # Printers whose epoch the last flushes found stale: their workers are stopped.
        self.stale: set[str] = set()

    async def flush(self, ctx: WorkerContext) -> int:
        """Commit the changed statuses in one command; return how many printers it carried."""
        batch = []
        for printer_id, seen in ctx.seen.items():
            if printer_id not in ctx.epochs:
                continue
            status = seen.status.as_dict()
            stale = seen.at - self._committed_at.get(printer_id, 0.0) >= refresh_after(
                printer_id)
            if stale or changed(self._committed.get(printer_id), status):
                batch.append((printer_id, status, seen.at))
        if not batch:
            return 0
        rows = [{"printer_id": pid, "epoch": ctx.epochs[pid], "observed_at": at, **status}
                for pid, status, at in batch]
        result = await ctx.command(Op.PRINTER_TELEMETRY, statuses=rows)
        if result is not None:
            refused = set(result.get("stale") or ())
            self.stale |= refused
            for printer_id, status, at in batch:
                if printer_id in refused:
                    continue
                self._committed[printer_id] = status
                self._committed_at[printer_id] = at
            self.commands += 1
        return len(batch)
