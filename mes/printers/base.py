"""The interface every printer client offers, its status and its errors."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

PrinterState = Literal["offline", "idle", "printing", "paused", "finished", "error"]


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """What a printer says now, the same for OctoPrint, PrusaLink and mock printers.

    `finished` means the printer reports a completed print that is still on the bed.
    """

    state: PrinterState
    nozzle_actual: float | None = None
    nozzle_target: float | None = None
    bed_actual: float | None = None
    bed_target: float | None = None
    file_name: str | None = None
    progress: float | None = None  # 0-100
    time_printed: float | None = None  # seconds
    time_left: float | None = None  # seconds
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as it goes into a telemetry command (every field is a plain value, so
        no deep copy as dataclasses.asdict makes)."""
        return {name: getattr(self, name) for name in STATUS_FIELDS}


STATUS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PrinterStatus))


class PrinterError(Exception):
    """A printer call failed: offline, timed out, refused or answered nonsense."""


class PrinterNotSent(PrinterError):
    """The request never left: no connection could be made (refused, or connect timeout).
    The only failure after which a command certainly did not happen."""


class PrinterNoAnswer(PrinterError):
    """The request may have reached the printer but no answer came back (a timeout, a
    dropped connection): whatever it asked for may or may not have happened."""


class PrinterRefused(PrinterError):
    """The printer answered with a 4xx status: it did not do what was asked."""


class PrinterBusy(PrinterRefused):
    """The printer refused because it is printing or otherwise busy (409)."""


class PrinterClient(Protocol):
    """One printer, whatever its API."""

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        """The printer's state now; offline if it cannot be reached.

        With `expect_job` false a client may skip reading job details while the printer is
        plainly idle (a worker with no job on that printer polls cheaper that way).
        """

    async def upload(self, name: str, data: bytes) -> None:
        """Store a G-code file under `name` without printing it."""

    async def start(self, name: str) -> None:
        """Start printing the stored file `name`: one short request; PrinterBusy if it won't.

        Only PrinterNotSent and PrinterRefused mean it certainly did not start.
        """

    async def pause(self) -> None:
        """Pause the current print."""

    async def resume(self) -> None:
        """Resume a paused print."""

    async def cancel(self) -> None:
        """Stop the current print."""

    async def delete_file(self, name: str) -> None:
        """Remove an uploaded file from the printer (missing files are fine)."""

    async def aclose(self) -> None:
        """Release connections."""
