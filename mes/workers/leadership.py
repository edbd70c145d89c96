"""Start the workers when this node becomes leader, stop them when it stops being leader."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from mes.auth.bootstrap import ensure_admin
from mes.raft.writer import NoLeader
from mes.workers.context import WorkerContext
from mes.workers.pool import WorkerPool
from mes.workers.retention import run_retention

if TYPE_CHECKING:
    from mes.node import FarmNode

log = logging.getLogger(__name__)

CHECK_EVERY = 0.1


class LeaderLoop:
    """Watches this node's Raft role; as leader it begins an epoch and runs a WorkerPool."""

    def __init__(self, node: FarmNode) -> None:
        self.node = node
        self.pool: WorkerPool | None = None
        self._task: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Until cancelled."""
        try:
            while True:
                leading = self.node.raft.is_leader()
                if leading and self.pool is None:
                    await self._begin()
                elif self.pool is not None and (not leading or self._task is None
                                                or self._task.done()):
                    await self._end()
                await asyncio.sleep(CHECK_EVERY)
        finally:
            await self._end()

    async def _begin(self) -> None:
        try:
            await ensure_admin(self.node)
            outcome = await self.node.writer.submit("leader.begin",
                                                    {"leader": self.node.settings.raft_self})
        except NoLeader:
            return
        if outcome.error is not None or not self.node.raft.is_leader():
            return
        epoch = int(outcome.value["epoch"])
        log.info("leading with epoch %d: starting printer workers", epoch)
        self.pool = WorkerPool(WorkerContext(self.node, epoch,
                                               metrics=self.node.metrics.workers))
        self._task = asyncio.create_task(self.pool.run(), name="worker-pool")
        self._retention = asyncio.create_task(run_retention(self.node), name="retention")

    async def _end(self) -> None:
        if self.pool is None:
            return
        log.info("no longer leading (epoch %d): stopping printer workers", self.pool.ctx.epoch)
        self.pool.ctx.fenced = True
        for task in (self._task, self._retention):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.pool = None
        self._task = None
        self._retention = None
