"""The leader's retention pass: commit `retention.prune` in bounded batches, periodically."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mes.raft.writer import NoLeader
from mes.state import retention
from mes.state.ops import Op
from mes.workers.ports import FarmPort

log = logging.getLogger(__name__)

# Rows of each kind one prune command deletes at most; the pass repeats while more remain.
BATCH = 500
DAY = 86_400.0


def cutoffs(node: FarmPort, now: float) -> tuple[float | None, float | None]:
    """The (jobs, audit) cutoff timestamps for a pass at `now`; None keeps that kind."""
    settings = node.settings.retention
    jobs = now - settings.job_days * DAY if settings.job_days > 0 else None
    audit = now - settings.audit_days * DAY if settings.audit_days > 0 else None
    return jobs, audit


async def prune_once(node: FarmPort) -> dict[str, int]:
    """Delete everything past retention, one batch per command, while this node leads.

    Returns the totals deleted. The cutoffs are fixed once per pass, in every command.
    """
    jobs_before, audit_before = cutoffs(node, time.time())
    totals = {"jobs": 0, "orders": 0, "files": 0, "audit": 0}
    if jobs_before is None and audit_before is None:
        return totals
    if not await node.read(lambda c: retention.pending(c, jobs_before, audit_before)):
        return totals
    args: dict[str, Any] = {"jobs_before": jobs_before, "audit_before": audit_before,
                            "limit": BATCH}
    while node.is_leader():
        outcome = await node.submit(Op.RETENTION_PRUNE, args, remember=False)
        if outcome.error is not None:
            log.error("retention: the prune command was refused: %s", outcome.error)
            break
        for kind in totals:
            totals[kind] += int(outcome.value[kind])
        if not outcome.value["more"]:
            break
        await asyncio.sleep(0)  # let the API and workers in between batches
    log.info("retention: deleted %(jobs)d jobs, %(orders)d orders, %(files)d file records, "
             "%(audit)d audit entries", totals)
    return totals


async def run_retention(node: FarmPort) -> None:
    """Until cancelled: a pass now, then one every RETENTION_INTERVAL seconds."""
    while True:
        try:
            await prune_once(node)
        except NoLeader:
            log.info("retention: no leader committed the prune; next pass later")
        except Exception:
            log.exception("retention pass failed; next pass later")
        await asyncio.sleep(node.settings.retention.interval)
