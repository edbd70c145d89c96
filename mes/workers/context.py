"""What the workers share: the node, the epoch, the settings and what each printer said last."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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


# The farm view is read again at least this often, even when no command changed the farm.
VIEW_MAX_AGE = 5.0


@dataclass
class FarmView:
    """The replicated printers and their active jobs, read once for all workers."""

    printers: dict[str, dict[str, Any]]
    active_jobs: dict[str, dict[str, Any]]
    read_at: float
    version: int = -1  # the state machine's farm_version before it was read


@dataclass
class WorkerContext:
    """Shared by the pool, the printer workers, the scheduler and the telemetry flusher."""

    node: FarmNode
    epoch: int
    seen: dict[str, Seen] = field(default_factory=dict)
    fenced: bool = False
    # Told of every status observed (printer id, status, time.time()); must not block.
    observer: Callable[[str, PrinterStatus, float], None] | None = None
    _view: FarmView | None = None
    # The scheduler's last read: (farm version, ready printers, bound) and the jobs found.
    startable: tuple[tuple[int, frozenset[str], int], list[dict[str, Any]]] | None = None
    view_reads: int = 0  # how often the farm view was read (GET /workers shows it)

    def view(self) -> FarmView:
        """The farm as last read, read again once a command other than telemetry applied
        (or VIEW_MAX_AGE passed), at most every half worker interval: 1,000 printers'
        rows cost milliseconds to read, and telemetry alone changes neither."""
        now = time.monotonic()
        view = self._view
        if view is not None:
            age = now - view.read_at
            if age < self.node.settings.printer_worker_interval / 2 or (
                    age < VIEW_MAX_AGE and view.version == self.node.machine.farm_version):
                return view
        self.view_reads += 1
        version = self.node.machine.farm_version  # before reading: a later change re-reads
        read = self.node.machine.read
        printers = {p["id"]: p for p in read(queries.worker_printers)}
        self._view = FarmView(printers, read(queries.active_jobs_by_printer), now, version)
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
