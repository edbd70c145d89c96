"""Everything a node runs for the printers: its lease, its worker pool and, on the leader,
the balancer.

Every node renews its lease and, while the lease is fresh, runs a WorkerPool for the
printers assigned to it. When the lease lapses (no renewal committed in time) the pool is
stopped at once; a new one starts when a renewal commits again. The leader also begins an
epoch (which fences its plans) and runs the ShardLeader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from mes.metrics.workers import WorkerMetrics
from mes.printers.base import PrinterClient
from mes.raft.writer import NoLeader
from mes.state import queries
from mes.state.machine import Outcome
from mes.state.ops import Op
from mes.workers.balancer import Slot, plan, silent_nodes
from mes.workers.context import WorkerContext
from mes.workers.lease import LeaseKeeper
from mes.workers.pool import StatusSink, WorkerPool
from mes.workers.ports import FarmPort

log = logging.getLogger(__name__)

CHECK_EVERY = 0.1


class ShardLeader:
    """The leader's balancer loop: expires silent nodes' leases and moves printers.

    `heard` maps each node to its lease seq and when this node first saw that renewal
    applied (its own monotonic clock); every node keeps it, so a new leader judges leases
    from what it saw as a follower instead of waiting a whole lease from its election.
    """

    def __init__(self, port: FarmPort, epoch: int,
                 heard: dict[str, tuple[int, float]] | None = None) -> None:
        self.port = port
        self.epoch = epoch
        self.heard: dict[str, tuple[int, float]] = {} if heard is None else heard
        self.commands = 0
        self.expired: list[str] = []
        # (farm version, live nodes) of the last plan that moved nothing: while neither
        # changes, the plan would move nothing again and the slots are not read (1,000
        # printers' rows twice a second otherwise).
        self._settled: tuple[int, frozenset[str]] | None = None
        self.slot_reads = 0

    async def step(self) -> bool:
        """Plan once and commit the plan if it changes anything; False once fenced."""
        leases = await self.port.read(queries.leases)
        lease_seconds = self.port.settings.printers.lease_seconds
        silent = silent_nodes(leases, self.heard, time.monotonic(), lease_seconds)
        if self.port.cluster_size == 1:
            # Alone, this node has nobody to give its printers to: its own renewals applied
            # late (a busy apply) never expire it (mes.workers.lease).
            silent = [s for s in silent if s["node"] != self.port.self_address]
        gone = {s["node"] for s in silent}
        live = [lease["node"] for lease in leases
                if not lease["expired"] and lease["node"] not in gone]
        version = self.port.farm_version  # before reading: a later change plans again
        if not silent and self._settled == (version, frozenset(live)):
            return True
        slots = await self.port.read(queries.shard_slots)
        self.slot_reads += 1
        moves = plan([Slot.of(row) for row in slots], live)
        if not silent and not moves:
            self._settled = (version, frozenset(live))
            return True
        args = {"leader_epoch": self.epoch, "now": time.time(), "expire": silent,
                "moves": [m.as_dict() for m in moves]}
        outcome = await self.port.submit(Op.SHARD_ASSIGN, args, remember=False)
        self.commands += 1
        if outcome.error is not None:
            if outcome.error["code"] == "stale_epoch":
                return False
            log.info("shard plan refused: %s", outcome.error["message"])
            return True
        for item in silent:
            log.warning("node %s renewed no lease for %.1f s: its lease expired, its floating "
                        "printers move", item["node"], item["silent_for"])
            self.expired.append(item["node"])
        return True

    async def run(self) -> None:
        """Until cancelled or fenced."""
        every = self.port.settings.printers.balance_interval
        while True:
            started = time.monotonic()
            try:
                if not await self.step():
                    return
            except NoLeader:
                pass
            except Exception:
                log.exception("shard balancer step failed")
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))


class WorkerHost:
    """Runs this node's lease keeper, its worker pool and, while leading, the balancer."""

    def __init__(self, port: FarmPort, metrics: WorkerMetrics | None = None,
                 leader_tasks: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
                 status_sink: Callable[[], StatusSink | None] = lambda: None) -> None:
        self.port = port
        self.metrics = metrics
        # Makes what receives each new pool's statuses (external OPC UA mode), if anything.
        self.status_sink = status_sink
        # Farm-wide jobs besides the balancer that run on the leader only (retention).
        self.leader_tasks = list(leader_tasks)
        self._leader_extra: list[asyncio.Task[None]] = []
        self.lease = LeaseKeeper(port)
        # Every lease renewal this node saw applied, and when (see ShardLeader).
        self.heard: dict[str, tuple[int, float]] = {}
        port.on_apply(self._observe)
        self.pool: WorkerPool | None = None
        # The mock printers this node runs, kept across its pools (mes.workers.pool).
        self.mocks: dict[str, PrinterClient] = {}
        self.leader: ShardLeader | None = None
        self._pool_task: asyncio.Task[None] | None = None
        self._leader_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None

    def _observe(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        """On the Raft thread: note when each renewal was applied here. Replayed renewals
        are noted late, which only makes the lease look younger (the safe side)."""
        if command.get("op") == Op.NODE_LEASE and outcome.ok \
                and isinstance(outcome.value, dict):
            node, seq = outcome.value.get("node"), outcome.value.get("seq")
            seen = self.heard.get(node) if isinstance(node, str) else None
            if isinstance(node, str) and isinstance(seq, int) \
                    and (seen is None or seen[0] != seq):
                self.heard[node] = (seq, time.monotonic())

    async def run(self) -> None:
        """Until cancelled."""
        self._lease_task = asyncio.create_task(self.lease.run(), name="node-lease")
        try:
            while True:
                await self._follow_leadership()
                await self._follow_lease()
                await asyncio.sleep(CHECK_EVERY)
        finally:
            await self._end_pool()
            await self._end_leading()
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._lease_task

    async def _follow_lease(self) -> None:
        valid = self.lease.valid()
        if valid and self.pool is None:
            log.info("lease held: driving the printers assigned to %s", self.port.self_address)
            ctx = WorkerContext(self.port, self.lease.valid)
            if self.metrics is not None:
                ctx.metrics = self.metrics
            self.pool = WorkerPool(ctx, self.status_sink(), self.mocks)
            self._pool_task = asyncio.create_task(self.pool.run(), name="worker-pool")
        elif self.pool is not None and (not valid or self._pool_task is None
                                        or self._pool_task.done()):
            if not valid:
                log.warning("lease lapsed %.1f s ago (no renewal committed in time): "
                            "stopping every printer worker of this node",
                            -self.lease.remaining())
            await self._end_pool()

    async def _end_pool(self) -> None:
        if self.pool is None:
            return
        self.pool.ctx.fenced = True
        if self._pool_task is not None:
            self._pool_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pool_task
        self.pool = None
        self._pool_task = None

    async def _follow_leadership(self) -> None:
        leading = self.port.is_leader()
        if leading and self.leader is None:
            await self._begin_leading()
        elif self.leader is not None and (not leading or self._leader_task is None
                                          or self._leader_task.done()):
            await self._end_leading()

    async def _begin_leading(self) -> None:
        try:
            await self.port.on_leading()
            outcome = await self.port.submit(Op.LEADER_BEGIN,
                                             {"leader": self.port.self_address})
        except NoLeader:
            return
        if outcome.error is not None or not self.port.is_leader():
            return
        epoch = int(outcome.value["epoch"])
        log.info("leading with epoch %d: balancing printers over the nodes", epoch)
        self.leader = ShardLeader(self.port, epoch, self.heard)
        self._leader_task = asyncio.create_task(self.leader.run(), name="shard-leader")
        self._leader_extra = [asyncio.create_task(task(), name="leader-task")
                              for task in self.leader_tasks]

    async def _end_leading(self) -> None:
        if self.leader is None:
            return
        log.info("no longer leading (epoch %d)", self.leader.epoch)
        for task in [self._leader_task, *self._leader_extra]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._leader_extra = []
        self.leader = None
        self._leader_task = None
