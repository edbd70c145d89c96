"""What the workers share: the node, the epoch, the settings and what each printer said last."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mes.metrics.workers import WorkerMetrics
from mes.printers.base import PrinterStatus
from mes.state import queries

if TYPE_CHECKING:
    from mes.node import FarmNode

log = logging.getLogger(__name__)


class Fenced(Exception):
    """A newer leader's epoch rejected this worker's command: stop working."""


@dataclass
class Seen:
    """A printer's latest status and when it was read."""

    status: PrinterStatus
    at: float


@dataclass
class FarmView:
    """The replicated printers and their active jobs, read once for all workers."""

    printers: dict[str, dict[str, Any]]
    active_jobs: dict[str, dict[str, Any]]
    read_at: float


@dataclass
class WorkerContext:
    """Shared by the pool, the printer workers, the scheduler and the telemetry flusher."""

    node: FarmNode
    epoch: int
    seen: dict[str, Seen] = field(default_factory=dict)
    fenced: bool = False
    # Told of every status observed (printer id, status, time.time()); must not block.
    observer: Callable[[str, PrinterStatus, float], None] | None = None
    # The node's worker metrics (unexported ones when none are given).
    metrics: WorkerMetrics = field(default_factory=lambda: WorkerMetrics(None))
    _view: FarmView | None = None

    def view(self) -> FarmView:
        """The farm as last read, re-read when older than half a worker interval."""
        max_age = self.node.settings.printer_worker_interval / 2
        now = time.monotonic()
        if self._view is None or now - self._view.read_at > max_age:
            read = self.node.machine.read
            printers = {p["id"]: p for p in read(queries.worker_printers)}
            self._view = FarmView(printers, read(queries.active_jobs_by_printer), now)
        return self._view

    def invalidate(self) -> None:
        """Forget the view after a command changed the farm."""
        self._view = None

    async def command(self, op: str, **args: Any) -> dict[str, Any] | None:
        """Submit a worker command with this epoch; None if a rule refused it."""
        outcome = await self.node.writer.submit(op, {"epoch": self.epoch, **args},
                                                remember=op != "printer.telemetry")
        if op != "printer.telemetry":
            self.invalidate()
        if outcome.error is None:
            value: dict[str, Any] | None = outcome.value
            return value
        if outcome.error["code"] == "stale_epoch":
            self.fenced = True
            raise Fenced(outcome.error["message"])
        log.info("%s refused: %s", op, outcome.error["message"])
        return None

    def saw(self, printer_id: str, status: PrinterStatus) -> None:
        """Record what a printer said just now."""
        seen = self.seen[printer_id] = Seen(status, time.time())
        if self.observer is not None:
            self.observer(printer_id, status, seen.at)
