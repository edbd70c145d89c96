"""Queue-order scheduling: queued jobs (by priority, then age or an operator's placing) go
to idle printers by claim, before anything is sent.

Every node schedules for the printers it drives: the choice rests on what the printer said
moments ago on this node (committed telemetry lags by a tick and a commit), and the claim
carries the printer's assignment epoch, so it commits only while this node still drives
the printer. Every node walks the same queue in the same order; when two nodes pick the same job
for different printers, apply lets the first claim win and refuses the other
(not_claimable), whose printer tries the next job in the next tick.
"""

from __future__ import annotations

import time
from typing import Any

from mes.state import queries
from mes.state.farm import is_reserved
from mes.state.ops import Op
from mes.workers.context import Fenced, WorkerContext
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
                and not printer.get("release")
                and seen is not None and seen.status.state in READY_STATES):
            ready[printer["id"]] = printer
    return ready


def assign(jobs: list[dict[str, Any]], ready: dict[str, dict[str, Any]],
           bound: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair jobs (oldest first) with ready printers, giving at most `bound` printers a job.

    A job goes to the printer it names, or to the first ready printer with its spool loaded.
    """
    free = dict(ready)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for job in jobs:
        if not free or len(pairs) == bound:
            break
        if job["printer_id"] is not None:
            choice = free.get(job["printer_id"])
        else:
            choice = next((p for p in free.values()
                           if p["filament_id"] == job["filament_id"]), None)
        if choice is not None:
            del free[choice["id"]]
            pairs.append((job, choice))
    return pairs


async def schedule(ctx: WorkerContext) -> int:
    """Claim queued jobs, oldest first, for ready printers; return how many were claimed.

    At most MAX_CLAIMS_PER_TICK printers are given a job per tick, and only the jobs those
    printers could take are read (bounded, indexed): the same pairs as walking the whole
    queue in FIFO order.
    """
    view = ctx.view()
    ready = ready_printers(list(view.printers.values()), view.active_jobs, ctx, time.time())
    if not ready:
        return 0
    bound = min(len(ready), MAX_CLAIMS_PER_TICK)
    # The same printers and an unchanged farm find the same jobs: with 1,000 idle printers
    # and nothing queued for them that saves 1,000 queries a tick.
    key = (ctx.node.farm_version, frozenset(ready), bound)
    if ctx.startable is not None and ctx.startable[0] == key:
        jobs = ctx.startable[1]
    else:
        jobs = ctx.node.read_now(
            lambda c: queries.startable_jobs(c, list(ready.values()), bound))
        ctx.startable = (key, jobs)
    claimed = 0
    for job, printer in assign(jobs, ready, bound):
        try:
            if await ctx.command(Op.JOB_CLAIM, for_printer=printer["id"], job_id=job["id"],
                                 printer_id=printer["id"],
                                 epoch=printer["drive_epoch"],
                                 printer_filename=printer_filename(job)) is not None:
                ctx.claimed.add(job["id"])
                claimed += 1
        except Fenced:
            continue  # the printer moved to another node meanwhile
    return claimed
