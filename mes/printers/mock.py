"""An in-process simulated printer driven by the MOCK_PRINTER_* settings.

It lives in the process of the node that polls it: when the printer moves to another node
(or the node restarts), a fresh mock there prints nothing, and its worker sees the running
job as lost. While the printer stays on its node, the mock outlives the node's worker pool
(mes.workers.pool): a worker that regains the printer after a lapsed lease adopts its print.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mes.printers.base import PrinterBusy, PrinterError, PrinterRefused, PrinterStatus

ROOM = 22.0


class MockPrinter:
    """Heats for a few intervals, prints for `job_ticks` intervals, then reports finished."""

    def __init__(self, interval: float, job_ticks: int, bed_target: float,
                 nozzle_target: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._job_ticks = job_ticks
        self._bed_target = bed_target
        self._nozzle_target = nozzle_target
        self._clock = clock
        self._file: str | None = None
        self._started = 0.0
        self._paused_at: float | None = None
        self._paused_total = 0.0
        self._finished = False
        self._error: str | None = None
        self.starts: dict[str, int] = {}
        self.files: set[str] = set()

    @property
    def _heat_time(self) -> float:
        return 3 * self._interval

    @property
    def _print_time(self) -> float:
        return self._job_ticks * self._interval

    def _elapsed(self) -> float:
        now = self._paused_at if self._paused_at is not None else self._clock()
        return max(0.0, now - self._started - self._paused_total)

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        """The simulated state at this moment."""
        if self._error is not None:
            return PrinterStatus(state="error", nozzle_actual=ROOM, bed_actual=ROOM,
                                 error=self._error)
        if self._file is None:
            return PrinterStatus(state="idle", nozzle_actual=ROOM, nozzle_target=0.0,
                                 bed_actual=ROOM, bed_target=0.0)
        elapsed = self._elapsed()
        heat = min(1.0, elapsed / self._heat_time)
        printed = max(0.0, elapsed - self._heat_time)
        progress = min(100.0, 100.0 * printed / self._print_time)
        if progress >= 100.0:
            self._finished = True
        if self._finished:
            return PrinterStatus(state="finished", nozzle_actual=ROOM, nozzle_target=0.0,
                                 bed_actual=ROOM, bed_target=0.0, file_name=self._file,
                                 progress=100.0, time_printed=self._print_time, time_left=0.0)
        return PrinterStatus(
            state="paused" if self._paused_at is not None else "printing",
            nozzle_actual=ROOM + (self._nozzle_target - ROOM) * heat,
            nozzle_target=self._nozzle_target,
            bed_actual=ROOM + (self._bed_target - ROOM) * heat, bed_target=self._bed_target,
            file_name=self._file, progress=round(progress, 2), time_printed=printed,
            time_left=max(0.0, self._print_time - printed))

    def _busy(self) -> bool:
        return self._file is not None and not self._finished

    def fail(self, message: str) -> None:
        """Simulate a printer fault (thermal runaway, ...): the print is lost."""
        self._error, self._file, self._finished, self._paused_at = message, None, False, None

    async def upload(self, name: str, data: bytes) -> None:
        """Keep the file's name: the mock prints nothing real."""
        self.files.add(name)

    async def start(self, name: str) -> None:
        """Start printing `name` unless it was not uploaded, a print is under way or the
        printer has a fault."""
        if self._error is not None:
            raise PrinterError(f"mock printer fault: {self._error}")
        if name not in self.files:
            raise PrinterRefused(f"mock printer has no file {name}")
        if self._busy():
            raise PrinterBusy(f"mock printer is printing {self._file}")
        self._file, self._started, self._finished = name, self._clock(), False
        self._paused_at, self._paused_total = None, 0.0
        self.starts[name] = self.starts.get(name, 0) + 1

    async def pause(self) -> None:
        """Pause the print."""
        if not self._busy() or self._paused_at is not None:
            raise PrinterBusy("nothing to pause")
        self._paused_at = self._clock()

    async def resume(self) -> None:
        """Resume a paused print."""
        if self._paused_at is None:
            raise PrinterBusy("not paused")
        self._paused_total += self._clock() - self._paused_at
        self._paused_at = None

    async def cancel(self) -> None:
        """Stop the print; the printer becomes idle."""
        if not self._busy():
            raise PrinterBusy("nothing to cancel")
        self._file, self._finished, self._paused_at = None, False, None

    async def delete_file(self, name: str) -> None:
        """Forget the file; refused while it prints."""
        if self._busy() and self._file == name:
            raise PrinterBusy("file is printing")
        self.files.discard(name)
        if self._file == name:
            self._file, self._finished = None, False

    async def aclose(self) -> None:
        """Nothing to release."""
