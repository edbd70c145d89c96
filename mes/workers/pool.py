"""A node's workers: one per printer assigned to this node, plus scheduler and telemetry.

The pool follows the assignments as they change: it starts a worker for each printer newly
assigned here, stops the worker of a printer that moved away (or whose epoch changed), and
hands over a printer the leader asks it to release: the worker stops after its tick, then
shard.release commits the move.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any, Protocol

from mes.printers.base import PrinterClient
from mes.printers.factory import client_for, is_mock
from mes.printers.http import SharedSession
from mes.raft.writer import NoLeader
from mes.state.ops import Op
from mes.workers.context import Fenced, WorkerContext
from mes.workers.printer_worker import LAG_WINDOW, PrinterWorker
from mes.workers.scheduler import schedule
from mes.workers.telemetry import TelemetryFlusher

log = logging.getLogger(__name__)


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _signature(printer: dict[str, Any]) -> tuple[Any, ...]:
    return (printer.get("url"), printer.get("api"), printer.get("api_key"))


class StatusSink(Protocol):
    """Receives every status a pool's workers observe (the external OPC UA server's writer,
    `mes.opcua.external.ExternalWriter`, is one); made by the node for each pool."""

    def attach(self, ctx: WorkerContext) -> None:
        """Start receiving the statuses the workers of `ctx` observe."""

    def start(self) -> None:
        """Start its own task (on the pool's event loop)."""

    async def stop(self) -> None:
        """Stop and let go of its connections."""


class WorkerPool:
    """Runs while this node's lease is fresh, for the printers assigned to this node."""

    def __init__(self, ctx: WorkerContext, sink: StatusSink | None = None,
                 mocks: dict[str, PrinterClient] | None = None) -> None:
        self.ctx = ctx
        # The in-process mock printers, by printer and url: they outlive this pool (a lease
        # that lapsed and came back), so that a worker adopts the print a mock is running,
        # as it does a real printer's, instead of finding it gone.
        self.mocks: dict[str, PrinterClient] = {} if mocks is None else mocks
        self.workers: dict[str, tuple[PrinterWorker, asyncio.Task[None], tuple[Any, ...]]] = {}
        self.telemetry = TelemetryFlusher()
        self.claims = 0
        self.released = 0
        self._releases: dict[str, asyncio.Task[None]] = {}
        self.http = SharedSession(ctx.node.settings.printers.targets,
                                  user_agent=f"mes node {ctx.node.self_address}")
        # External-server mode: this node writes the printers it drives into the lab's server.
        self.external = sink
        if self.external is not None:
            self.external.attach(ctx)

    async def run(self) -> None:
        """Every interval: match workers to assignments, schedule, commit telemetry."""
        interval = self.ctx.node.settings.printers.worker_interval
        if self.external is not None:
            self.external.start()
        try:
            while not self.ctx.fenced:
                started = time.monotonic()
                try:
                    await self._sync_workers()
                    if self.ctx.node.settings.printers.auto_schedule:
                        self.claims += await schedule(self.ctx)
                    await self.telemetry.flush(self.ctx)
                    for printer_id in list(self.telemetry.stale):
                        self.telemetry.stale.discard(printer_id)
                        if printer_id in self.workers:
                            await self._drop(printer_id)
                except Fenced as exc:
                    log.info("worker pool: %s", exc)
                except NoLeader as exc:  # a failover: expected, the next tick tries again
                    log.info("worker pool: no leader to commit to (%s); next tick", exc)
                except Exception:
                    log.exception("worker pool tick failed")
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        finally:
            await self.stop()

    async def _sync_workers(self) -> None:
        wanted = self.ctx.view().printers  # read again only when the farm changed
        for printer_id in list(self.workers):
            printer = wanted.get(printer_id)
            worker, task, signature = self.workers[printer_id]
            if printer is not None and printer["release"]:
                if printer_id not in self._releases:
                    self._releases[printer_id] = asyncio.create_task(
                        self._release(printer_id, printer["drive_epoch"]),
                        name=f"release-{printer_id}")
            elif printer is None or _signature(printer) != signature or task.done() \
                    or printer["drive_epoch"] != worker.epoch:
                await self._drop(printer_id)
        added = 0
        for printer_id, printer in wanted.items():
            if printer_id in self._releases and self._releases[printer_id].done():
                del self._releases[printer_id]
            if printer_id in self._releases:
                continue
            if printer["release"]:
                # Asked to hand over a printer this pool does not run: nothing to stop.
                self._releases[printer_id] = asyncio.create_task(
                    self._release(printer_id, printer["drive_epoch"]),
                    name=f"release-{printer_id}")
                continue
            if printer_id in self.workers:
                continue
            try:
                client = self._client(printer)
            except ValueError as exc:
                log.warning("no worker for printer %s: %s", printer_id, exc)
                continue
            worker = PrinterWorker(printer_id, client, self.ctx, int(printer["drive_epoch"]))
            self.ctx.epochs[printer_id] = worker.epoch
            task = asyncio.create_task(worker.run(), name=f"printer-{printer_id}")
            self.workers[printer_id] = (worker, task, _signature(printer))
            added += 1
        if added:
            # Objects alive now (workers, the OPC UA address space, ...) live on: the
            # collector need not walk them again in each full collection (a stall of the
            # whole loop with 1,000 printers).
            gc.freeze()

    def _client(self, printer: dict[str, Any]) -> PrinterClient:
        """A new client for a printer; a mock printer's is the one that already runs here."""
        mock = f"{printer['id']}|{printer.get('url')}" if is_mock(printer) else None
        if mock is not None and mock in self.mocks:
            return self.mocks[mock]
        client = client_for(printer, printer.get("api_key"), self.ctx.node.settings.printers,
                            self.http.get)
        if mock is not None:
            self.mocks[mock] = client
        return client

    async def _drop(self, printer_id: str) -> None:
        worker, task, _ = self.workers.pop(printer_id)
        task.cancel()
        self.ctx.seen.pop(printer_id, None)
        self.ctx.epochs.pop(printer_id, None)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await worker.client.aclose()

    async def _release(self, printer_id: str, epoch: int) -> None:
        """Hand a printer over: let its worker finish its tick, then commit shard.release."""
        entry = self.workers.get(printer_id)
        if entry is not None:
            worker, task, _ = entry
            worker.retiring = True
            timeout = max(2.0, self.ctx.node.settings.printers.worker_interval * 10)
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this release is being cancelled (the pool stops): the next
                    # pool asks for the release again; never swallow a cancellation
            except Exception:
                pass
            if printer_id in self.workers:
                await self._drop(printer_id)
        try:
            outcome = await self.ctx.node.submit(Op.SHARD_RELEASE,
                                                 {"printer_id": printer_id, "epoch": epoch})
        except Exception as exc:  # the next tick asks again
            log.info("release of printer %s not committed: %s", printer_id, exc)
            return
        if outcome.ok:
            self.released += 1
            log.info("printer %s handed over to %s", printer_id, outcome.value["node"])

    def stats(self) -> dict[str, Any]:
        """Ticks, tick lag percentiles (every worker's ticks of the last LAG_WINDOW seconds)
        and commands sent."""
        since = time.monotonic() - LAG_WINDOW
        lags = sorted(lag for worker, _, _ in self.workers.values()
                      for at, lag in worker.lags if at >= since)
        p50, p99 = _percentile(lags, 0.5), _percentile(lags, 0.99)
        return {
            "printers": len(self.workers),
            "driving": sorted(self.workers),
            "ticks": sum(worker.ticks for worker, _, _ in self.workers.values()),
            "lag_p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "lag_p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "telemetry_commands": self.telemetry.commands,
            "view_reads": self.ctx.view_reads, "view_patches": self.ctx.view_patches,
            "claims": self.claims,
            "released": self.released,
        }

    async def stop(self) -> None:
        """Cancel every printer worker and close its client."""
        for release in self._releases.values():
            release.cancel()
        self._releases.clear()
        entries = list(self.workers.values())
        self.workers.clear()
        self.ctx.epochs.clear()
        for _, task, _ in entries:
            task.cancel()
        for worker, task, _ in entries:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await worker.client.aclose()
        with contextlib.suppress(Exception):
            await self.http.aclose()
        if self.external is not None:
            await self.external.stop()
