"""What the workers share: the node, the epoch, the settings and what each printer said last."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mes.printers.base import PrinterStatus

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
class WorkerContext:
    """Shared by the pool, the printer workers, the scheduler and the telemetry flusher."""

    node: FarmNode
    epoch: int
    seen: dict[str, Seen] = field(default_factory=dict)
    fenced: bool = False

    async def command(self, op: str, **args: Any) -> dict[str, Any] | None:
        """Submit a worker command with this epoch; None if a rule refused it."""
        outcome = await self.node.writer.submit(op, {"epoch": self.epoch, **args})
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
        self.seen[printer_id] = Seen(status, time.time())
