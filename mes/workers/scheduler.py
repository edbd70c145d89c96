"""FIFO scheduling: queued jobs go to idle printers by claim, before anything is sent."""

from __future__ import annotations

import time
from typing import Any

from mes.state import queries
from mes.state.farm import is_reserved
from mes.workers.context import WorkerContext
from mes.workers.printer_worker import printer_filename

READY_STATES = ("idle", "finished")
# Printers given a job in one tick at most; the rest get theirs in the next ticks.
MAX_CLAIMS_PER_TICK = 32


def ready_printers(printers: list[dict[str, Any]], busy: dict[str, Any],
                   ctx: WorkerContext, now: float) -> dict[str, dict[str, Any]]:
    """Printers that may take a job: bed clear, not reserved, not busy, and seen ready."""
    ready = {}
    for printer in printers:
        seen = ctx.seen.get(printer["id"])
        if (printer["bed_clear"] and not is_reserved(printer, now) and printer["id"] not in busy
                and seen is not None and seen.status.state in READY_STATES):
            ready[printer["id"]] = printer
    return ready


async def schedule(ctx: WorkerContext) -> int:
    """Claim queued jobs, oldest first, for ready printers; return how many were claimed.

    At most MAX_CLAIMS_PER_TICK printers are given a job per tick, and only the jobs those
    printers could take are read: the same choice as walking the whole queue in FIFO order.
    """
    view = ctx.view()
    ready = ready_printers(list(view.printers.values()), view.active_jobs, ctx, time.time())
    if not ready:
        return 0
    bound = min(len(ready), MAX_CLAIMS_PER_TICK)
    jobs = ctx.node.machine.read(
        lambda c: queries.startable_jobs(c, list(ready.values()), bound))
    claimed = attempts = 0
    for job in jobs:
        if not ready or attempts == bound:
            break
        if job["printer_id"] is not None:
            choice = ready.get(job["printer_id"])
        else:
            choice = next((p for p in ready.values()
                           if p["filament_id"] == job["filament_id"]), None)
        if choice is None:
            continue
        del ready[choice["id"]]
        attempts += 1
        if await ctx.command("job.claim", job_id=job["id"], printer_id=choice["id"],
                             printer_filename=printer_filename(job)) is not None:
            claimed += 1
    return claimed
