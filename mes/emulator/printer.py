"""The simulated printer: stored files, one job, two heaters and start counters.

Nothing here speaks HTTP. Time is never ticked: every public method first calls
:meth:`Printer.now`, which brings the simulation up to date from timestamps (a print whose
elapsed time reached ``job_time`` is finished at the exact moment it would have ended).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

AMBIENT = 25.0
PRINT_NOZZLE = 215.0
PRINT_BED = 60.0
HEAT_TAU = 2.0
"""Heater time constant in seconds: about 78 % of the way to the target after 3 s."""

# How many recent non-read requests each printer keeps for GET /emulator/status.
REQUEST_LOG = 500
PRINTABLE_SUFFIXES = (".gcode", ".bgcode", ".gco", ".g")

Clock = Callable[[], float]


class Phase(StrEnum):
    """What the printer is doing; the values are PrusaLink's printer states."""

    IDLE = "IDLE"
    PRINTING = "PRINTING"
    PAUSED = "PAUSED"
    FINISHED = "FINISHED"
    STOPPED = "STOPPED"


class PrinterError(Exception):
    """A refused request, with the HTTP status the APIs answer it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Heater:
    """A heater whose temperature approaches its target (or ambient) exponentially."""

    def __init__(self, now: float) -> None:
        self.target = 0.0
        self._start_temp = AMBIENT
        self._since = now

    def actual(self, now: float) -> float:
        """Temperature at monotonic time ``now``."""
        goal = max(self.target, AMBIENT)
        dt = max(0.0, now - self._since)
        return goal + (self._start_temp - goal) * math.exp(-dt / HEAT_TAU)

    def set_target(self, target: float, now: float) -> None:
        """Change the target from time ``now`` on."""
        now = max(now, self._since)
        self._start_temp = self.actual(now)
        self._since = now
        self.target = target


@dataclass
class StoredFile:
    """A file kept in memory."""

    path: str
    data: bytes
    uploaded: float

    @property
    def name(self) -> str:
        """The last component of the path."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)


@dataclass
class PrintHistory:
    """Outcome of the prints of one file."""

    successes: int = 0
    failures: int = 0
    last_success: bool = False
    last_date: float = 0.0
    last_print_time: float = 0.0


@dataclass
class Job:
    """One print. Times are monotonic; paused time is not print time."""

    id: int
    path: str
    size: int
    m_timestamp: float
    started: float
    state: Phase = Phase.PRINTING
    paused_at: float | None = None
    paused_total: float = 0.0
    ended: float | None = None

    @property
    def name(self) -> str:
        """The file name without its folder."""
        return self.path.rsplit("/", 1)[-1]

    def elapsed(self, now: float) -> float:
        """Seconds spent printing (not paused) up to ``now`` or the end of the job."""
        end = self.ended if self.ended is not None else now
        paused = self.paused_total
        if self.paused_at is not None:
            paused += end - self.paused_at
        return max(0.0, end - self.started - paused)


def clean_path(path: str) -> str:
    """Normalise a storage path (no leading slash); refuse empty, ``.`` and ``..`` parts."""
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise PrinterError(400, f"Invalid file path: {path!r}")
    return "/".join(parts)


def check_printable(path: str) -> None:
    """Refuse file names that are not G-code (415, as the real servers do)."""
    if not path.lower().endswith(PRINTABLE_SUFFIXES):
        raise PrinterError(415, f"Unsupported file type: {path!r}")


class Printer:
    """One emulated printer. ``clock`` is monotonic, ``wall`` is epoch seconds."""

    def __init__(
        self,
        port: int,
        job_time: float,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        heat_time: float = 0.0,
    ) -> None:
        self.port = port
        self.job_time = job_time
        # Seconds every job heats before the printer moves; job_time counts after it.
        self.heat_time = heat_time
        self._clock = clock
        self._wall = wall
        now = clock()
        self.connected = True
        self.files: dict[str, StoredFile] = {}
        self.history: dict[str, PrintHistory] = {}
        self.job: Job | None = None
        self.selected: str | None = None
        self.starts: Counter[str] = Counter()
        self.total_starts = 0
        self.stops: Counter[str] = Counter()  # jobs stopped (cancelled) before their end
        self.moved: Counter[str] = Counter()  # ended jobs that got past heating and moved
        # Recent requests that were not reads, and every start, with the client that sent it.
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG)
        self.started_by: list[dict[str, Any]] = []
        self.reads_by: Counter[str] = Counter()  # reads (status polls) per client
        self.tool = Heater(now)
        self.bed = Heater(now)
        self._next_job_id = 1

    # -- time ---------------------------------------------------------------------------

    def now(self) -> float:
        """Bring the simulation up to the present; return the monotonic time."""
        now = self._clock()
        job = self.job
        total = self.heat_time + self.job_time
        if job is not None and job.state is Phase.PRINTING and job.elapsed(now) >= total:
            self._end_job(job, Phase.FINISHED, job.started + job.paused_total + total)
        return now

    def _printed(self, job: Job, now: float) -> float:
        """Seconds the job has moved (printed) after heating, up to ``now``."""
        return min(self.job_time, max(0.0, job.elapsed(now) - self.heat_time))

    def wall_time(self, monotonic: float) -> float:
        """Convert a monotonic timestamp of the past to epoch seconds."""
        return self._wall() - (self._clock() - monotonic)

    # -- state --------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """IDLE before the first job, else the state of the last job."""
        self.now()
        return Phase.IDLE if self.job is None else self.job.state

    @property
    def busy(self) -> bool:
        """True while a job is printing or paused."""
        return self.phase in (Phase.PRINTING, Phase.PAUSED)

    @property
    def active_job(self) -> Job | None:
        """The printing or paused job, if any."""
        return self.job if self.busy else None

    def progress(self) -> float | None:
        """Percent done of the last job (100.0 once finished), None without a job."""
        now = self.now()
        job = self.job
        if job is None:
            return None
        if job.state is Phase.FINISHED:
            return 100.0
        return min(100.0, 100.0 * self._printed(job, now) / self.job_time)

    def print_time(self) -> float:
        """Seconds the last job has printed (0 without a job)."""
        now = self.now()
        return 0.0 if self.job is None else self._printed(self.job, now)

    def time_left(self) -> float:
        """Seconds the last job still needs (0 once it ended)."""
        self.now()
        job = self.job
        if job is None or job.state in (Phase.FINISHED, Phase.STOPPED):
            return 0.0
        return max(0.0, self.job_time - self.print_time())

    def temperatures(self) -> dict[str, tuple[float, float]]:
        """``{"tool0": (actual, target), "bed": (actual, target)}``, rounded to 0.1 °C."""
        now = self.now()
        return {
            "tool0": (round(self.tool.actual(now), 1), self.tool.target),
            "bed": (round(self.bed.actual(now), 1), self.bed.target),
        }

    # -- files --------------------------------------------------------------------------

    def file(self, path: str) -> StoredFile:
        """The stored file at ``path``; 404 if absent."""
        stored = self.files.get(clean_path(path))
        if stored is None:
            raise PrinterError(404, f"File not found: {path}")
        return stored

    def printing_file(self, path: str) -> bool:
        """True if ``path`` is the file of the printing or paused job."""
        job = self.active_job
        return job is not None and job.path == path

    def store(self, path: str, data: bytes, overwrite: bool = True) -> StoredFile:
        """Keep an uploaded file; 409 if it exists and may not be overwritten or is printing."""
        path = clean_path(path)
        check_printable(path)
        if path in self.files and not overwrite:
            raise PrinterError(409, f"File already exists: {path}")
        if self.printing_file(path):
            raise PrinterError(409, f"File is currently being printed: {path}")
        stored = StoredFile(path, data, self._wall())
        self.files[path] = stored
        return stored

    def delete(self, path: str) -> None:
        """Remove a file; 404 if absent, 409 while it prints."""
        stored = self.file(path)
        if self.printing_file(stored.path):
            raise PrinterError(409, f"File is currently being printed: {stored.path}")
        del self.files[stored.path]
        if self.selected == stored.path:
            self.selected = None

    # -- control ------------------------------------------------------------------------

    def _require_ready(self) -> None:
        if not self.connected:
            raise PrinterError(409, "Printer is not operational")
        if self.busy:
            raise PrinterError(409, "Printer is busy")

    def select(self, path: str) -> None:
        """Select a file without printing it (OctoPrint)."""
        stored = self.file(path)
        self._require_ready()
        self.selected = stored.path

    def start(self, path: str) -> Job:
        """Start printing a stored file; 404 if absent, 409 if busy or disconnected."""
        stored = self.file(path)
        self._require_ready()
        now = self.now()
        job = Job(self._next_job_id, stored.path, stored.size, stored.uploaded, now)
        self._next_job_id += 1
        self.job = job
        self.selected = stored.path
        self.starts[stored.path] += 1
        self.total_starts += 1
        self.tool.set_target(PRINT_NOZZLE, now)
        self.bed.set_target(PRINT_BED, now)
        return job

    def pause(self) -> None:
        """Pause the printing job; 409 unless printing."""
        now = self.now()
        job = self.job
        if job is None or job.state is not Phase.PRINTING:
            raise PrinterError(409, "Printer is not printing")
        job.state = Phase.PAUSED
        job.paused_at = now

    def resume(self) -> None:
        """Resume the paused job; 409 unless paused."""
        now = self.now()
        job = self.job
        if job is None or job.state is not Phase.PAUSED or job.paused_at is None:
            raise PrinterError(409, "Printer is not paused")
        job.paused_total += now - job.paused_at
        job.paused_at = None
        job.state = Phase.PRINTING

    def stop(self) -> None:
        """Stop (cancel) the printing or paused job; 409 if there is none."""
        now = self.now()
        job = self.active_job
        if job is None:
            raise PrinterError(409, "Printer is neither printing nor paused")
        self._end_job(job, Phase.STOPPED, now)

    def connect(self) -> None:
        """Connect to the (virtual) serial port."""
        self.connected = True

    def disconnect(self) -> None:
        """Disconnect; a running print fails."""
        job = self.active_job
        if job is not None:
            self._end_job(job, Phase.STOPPED, self.now())
        self.connected = False

    def set_targets(self, tool: float | None = None, bed: float | None = None) -> None:
        """Set heater targets; 409 while disconnected."""
        if not self.connected:
            raise PrinterError(409, "Printer is not operational")
        now = self.now()
        if tool is not None:
            self.tool.set_target(tool, now)
        if bed is not None:
            self.bed.set_target(bed, now)

    def _end_job(self, job: Job, state: Phase, at: float) -> None:
        if job.paused_at is not None:
            job.paused_total += at - job.paused_at
            job.paused_at = None
        job.state = state
        job.ended = at
        record = self.history.setdefault(job.path, PrintHistory())
        success = state is Phase.FINISHED
        if success:
            record.successes += 1
        else:
            record.failures += 1
        record.last_success = success
        record.last_date = self.wall_time(at)
        record.last_print_time = job.elapsed(at)
        if state is Phase.STOPPED:
            self.stops[job.path] += 1
        if self._printed(job, at) > 0:
            self.moved[job.path] += 1
        self.tool.set_target(0.0, at)
        self.bed.set_target(0.0, at)

    # -- emulator status ----------------------------------------------------------------

    def record_request(self, client: str, method: str, path: str) -> None:
        """Remember a request that may change the printer (wall time, client, what)."""
        self.requests.append({"at": self._wall(), "client": client, "method": method,
                              "path": path})

    def record_start(self, client: str, path: str) -> None:
        """Remember which client started a print of `path`."""
        self.started_by.append({"at": self._wall(), "client": client, "file": path})

    def summary(self) -> dict[str, Any]:
        """API-neutral view for ``GET /emulator/status``."""
        job = self.job
        active = self.active_job
        progress = self.progress()
        moved = Counter(self.moved)
        if active is not None and self._printed(active, self.now()) > 0:
            moved[active.path] += 1
        return {
            "port": self.port,
            "phase": str(self.phase),
            "connected": self.connected,
            "starts": dict(self.starts),
            "total_starts": self.total_starts,
            "stops": dict(self.stops),
            "moved": dict(moved),
            "heat_time": self.heat_time,
            "current_file": None if active is None else active.path,
            "last_file": None if job is None else job.path,
            "job_id": None if job is None else job.id,
            "progress": None if progress is None else round(progress, 2),
            "files": sorted(self.files),
            "requests": list(self.requests),
            "started_by": list(self.started_by),
            "reads_by": dict(self.reads_by),
        }
