"""What the workers of one node share: the node, its lease, the settings and what each
printer said last."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mes.metrics.workers import WorkerMetrics
from mes.printers.base import PrinterStatus
from mes.state import queries
from mes.state.ops import Op
from mes.workers.ports import FarmPort

log = logging.getLogger(__name__)


class Fenced(Exception):
    """This node may no longer act on a printer (it moved away, or the lease lapsed)."""

    def __init__(self, message: str, printer_id: str | None = None) -> None:
        super().__init__(message)
        self.printer_id = printer_id


@dataclass
class Seen:
    """A printer's latest status and when it was read."""

    status: PrinterStatus
    at: float


# The farm view is read again at least this often, even when no command changed the farm.
VIEW_MAX_AGE = 5.0


@dataclass
class FarmView:
    """This node's printers (with their assignment epochs) and their active jobs, read once
    for all workers."""

    printers: dict[str, dict[str, Any]]
    active_jobs: dict[str, dict[str, Any]]
    read_at: float
    version: int = -1  # the state machine's farm_version before it was read


def always() -> bool:
    """A lease that never lapses (tests that drive a worker alone)."""
    return True


@dataclass
class WorkerContext:
    """Shared by the pool, the printer workers, the scheduler and the telemetry flusher."""

    node: FarmPort
    # Whether this node's lease lets it act now (LeaseKeeper.valid).
    lease_valid: Callable[[], bool] = always
    seen: dict[str, Seen] = field(default_factory=dict)
    # The assignment epoch each running worker drives its printer under.
    epochs: dict[str, int] = field(default_factory=dict)
    # Jobs this pool claimed: a start of any other starting job may have been sent by an
    # earlier driver (another node, or this node's previous pool), so it waits to show.
    claimed: set[str] = field(default_factory=set)
    # Set when the whole pool must stop (the lease lapsed).
    fenced: bool = False
    # Told of every status observed (printer id, status, time.time()); must not block.
    observer: Callable[[str, PrinterStatus, float], None] | None = None
    # The node's worker metrics (unexported ones when none are given).
    metrics: WorkerMetrics = field(default_factory=lambda: WorkerMetrics(None))
    _view: FarmView | None = None
    # The scheduler's last read: (farm version, ready printers, bound) and the jobs found.
    startable: tuple[tuple[int, frozenset[str], int], list[dict[str, Any]]] | None = None
    view_reads: int = 0  # how often the farm view was read (GET /workers shows it)
    view_patches: int = 0  # how often some printers of it were read again
    # Printers a command of this node changed since the view was read: read again (alone)
    # before the view is next used.
    _changed: set[str] = field(default_factory=set)
    # This node's assignments {printer id: epoch} at a farm version: may_act reads them
    # again only when the farm version moved (any command but telemetry and lease renewals,
    # or a snapshot).
    _epochs_at: tuple[int, dict[str, int]] | None = None

    def view(self) -> FarmView:
        """This node's printers as last read, read again once the farm version moved (or
        VIEW_MAX_AGE passed), at most every half worker interval: 1,000 printers' rows cost
        milliseconds to read, and telemetry and lease renewals change neither. The printers
        this node's own commands changed are read again at once, alone (`changed`): with
        jobs starting and finishing every second, reading all of them after each command
        cost a fifth of the node's CPU (bench/workers.py --arrivals)."""
        now = time.monotonic()
        view = self._view
        if view is not None:
            age = now - view.read_at
            if age < self.node.settings.printers.worker_interval / 2 or (
                    age < VIEW_MAX_AGE and view.version == self.node.farm_version):
                if self._changed:
                    view = self._view = self._patched(view)
                return view
        self.view_reads += 1
        self._changed.clear()  # before reading: what changes later is read again
        version = self.node.farm_version  # before reading: a later change re-reads
        me = self.node.self_address
        printers = {p["id"]: p for p in self.node.read_now(
            lambda c: queries.driven_printers(c, me))}
        active = self.node.read_now(
            lambda c: queries.active_jobs_by_printer(c, list(printers)))
        self._view = FarmView(printers, active, now, version)
        return self._view

    def _patched(self, view: FarmView) -> FarmView:
        """`view` with the changed printers read again (their rows and active jobs); it
        keeps its time and version, so the rest is read again when it would have been."""
        ids = sorted(self._changed)
        self._changed.clear()
        self.view_patches += 1
        me = self.node.self_address
        rows = self.node.read_now(lambda c: queries.driven_printers(c, me, ids))
        active = self.node.read_now(lambda c: queries.active_jobs_by_printer(c, ids))
        printers, actives = dict(view.printers), dict(view.active_jobs)
        for pid in ids:
            printers.pop(pid, None)  # no longer driven here when it is not read again
            actives.pop(pid, None)
        printers.update((p["id"], p) for p in rows)
        actives.update(active)
        return FarmView(printers, actives, view.read_at, view.version)

    def invalidate(self, printer_id: str | None = None) -> None:
        """Forget the view after a command changed the farm: only one printer's part when
        the command was about that printer."""
        if printer_id is None or self._view is None:
            self._view = None
        else:
            self._changed.add(printer_id)

    def may_act(self, printer_id: str, epoch: int) -> bool:
        """Whether this node may talk to the printer now: its lease is fresh and, in the
        state applied here, the printer is still assigned to it under `epoch`."""
        if self.fenced or not self.lease_valid():
            return False
        return self.applied_epochs().get(printer_id) == epoch

    def applied_epochs(self) -> dict[str, int]:
        """The epoch of each printer assigned to this node in the state applied here: read
        again whenever the farm version moved (it moves after every command that can change
        an assignment is applied, and after a snapshot), so it is never older than the
        version read before it. One read per change instead of one per poll."""
        version = self.node.farm_version  # before reading: a later change re-reads
        cached = self._epochs_at
        if cached is not None and cached[0] == version:
            return cached[1]
        me = self.node.self_address
        epochs = self.node.read_now(lambda c: queries.epochs_of_node(c, me))
        self._epochs_at = (version, epochs)
        return epochs

    async def command(self, op: str, for_printer: str | None = None,
                      **args: Any) -> dict[str, Any] | None:
        """Submit a worker command (fenced by the epoch in `args`); None if a rule refused
        it; Fenced if the printer's epoch is stale. `for_printer`: the one printer of this
        node's view the command can change (None: any)."""
        outcome = await self.node.submit(op, args, remember=op != Op.PRINTER_TELEMETRY)
        if op != Op.PRINTER_TELEMETRY:
            self.invalidate(for_printer)
        if outcome.error is None:
            value: dict[str, Any] | None = outcome.value
            return value
        if outcome.error["code"] == "stale_epoch":
            printer_id = args.get("printer_id", args.get("id"))
            raise Fenced(outcome.error["message"], printer_id)
        log.info("%s refused: %s", op, outcome.error["message"])
        return None

    def saw(self, printer_id: str, status: PrinterStatus) -> None:
        """Record what a printer said just now."""
        seen = self.seen[printer_id] = Seen(status, time.time())
        if self.observer is not None:
            self.observer(printer_id, status, seen.at)
