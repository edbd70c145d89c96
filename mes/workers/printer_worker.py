"""One printer's worker: each tick compares replicated state with the printer and commits
the difference. Stateless but for one thing: when this leader sent a start, it waits a
grace period for the printer to show it rather than sending it again."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import deque
from typing import Any

from mes.printers.base import (
    PrinterBusy,
    PrinterClient,
    PrinterError,
    PrinterNoAnswer,
    PrinterStatus,
)
from mes.printers.mock import MockPrinter
from mes.state import queries
from mes.workers.context import Fenced, WorkerContext

log = logging.getLogger(__name__)

# How long a printer may take to show a print that was just started.
START_GRACE = 15.0
# How long a claimed job waits for an offline printer before it goes back to the queue.
CLAIM_TIMEOUT = 60.0
OWN_FILE = re.compile(r"^mes-([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})\.b?gcode$")
MAX_BACKOFF = 30.0
# How many recent tick lags each worker keeps for its statistics.
LAG_HISTORY = 300


def printer_filename(job: dict[str, Any]) -> str:
    """The unique name a job's file gets on the printer, which identifies the job there."""
    suffix = ".bgcode" if str(job.get("filepath", "")).lower().endswith(".bgcode") else ".gcode"
    return f"mes-{job['id']}{suffix}"


class PrinterWorker:
    """Polls one printer every interval and reconciles; never dies, backs off on errors."""

    def __init__(self, printer_id: str, client: PrinterClient, ctx: WorkerContext) -> None:
        self.printer_id = printer_id
        self.client = client
        self.ctx = ctx
        self._sent_at: dict[str, float] = {}
        self._failures = 0
        self.ticks = 0
        self.lags: deque[float] = deque(maxlen=LAG_HISTORY)

    async def run(self) -> None:
        """Tick until cancelled or fenced."""
        interval = self.ctx.node.settings.printer_worker_interval
        next_tick = time.monotonic()
        while not self.ctx.fenced:
            self.lags.append(max(0.0, time.monotonic() - next_tick))
            try:
                await self.tick()
                self._failures = 0
            except Fenced:
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self._failures += 1
                log.exception("worker of printer %s failed (%d in a row)", self.printer_id,
                              self._failures)
            self.ticks += 1
            pause = interval if not self._failures else min(interval * 2**self._failures,
                                                             MAX_BACKOFF)
            next_tick = max(next_tick + pause, time.monotonic())
            await asyncio.sleep(next_tick - time.monotonic())

    async def poll(self, expect_job: bool = True) -> PrinterStatus:
        """The printer's status, or offline with the reason; never raises."""
        timeout = max(2.0, self.ctx.node.settings.printer_worker_interval * 5)
        try:
            async with asyncio.timeout(timeout):  # no extra task per poll, unlike wait_for
                status = await self.client.status(expect_job)
        except (PrinterError, TimeoutError) as exc:
            status = PrinterStatus(state="offline", error=str(exc) or "timed out")
        except Exception as exc:  # a printer answering nonsense must not stop the worker
            log.warning("printer %s: unreadable status: %r", self.printer_id, exc)
            status = PrinterStatus(state="offline", error=f"unreadable status: {exc!r}")
        self.ctx.saw(self.printer_id, status)
        return status

    async def tick(self) -> None:
        """One reconciliation."""
        view = self.ctx.view()
        status = await self.poll(expect_job=self.printer_id in view.active_jobs)
        view = self.ctx.view()
        printer = view.printers.get(self.printer_id)
        if printer is None:
            return
        job = view.active_jobs.get(self.printer_id)
        if job is None:
            await self._without_job(printer, status)
        elif job["phase"] == "starting":
            await self._starting(job, status)
        else:
            await self._running(printer, job, status)

    async def _without_job(self, printer: dict[str, Any], status: PrinterStatus) -> None:
        if status.state in ("printing", "paused") and status.file_name:
            known = self.ctx.node.machine.read(
                lambda c: queries.job_by_printer_file(c, self.printer_id, str(status.file_name)))
            own = OWN_FILE.match(str(status.file_name))
            queued = self.ctx.node.machine.read(
                lambda c: queries.get_job(c, own.group(1))) if own and known is None else None
            if queued is not None and queued["status"] == "Queued" and queued["phase"] is None:
                # One of our jobs runs here unclaimed (a start whose answer was lost): take it
                # back rather than let the scheduler send it to a second printer.
                await self.ctx.command("job.claim", job_id=queued["id"],
                                       printer_id=self.printer_id,
                                       printer_filename=str(status.file_name))
            elif known is not None and known["status"] == "Canceled":
                log.info("printer %s still prints canceled job %s: cancelling", self.printer_id,
                         known["id"])
                await self._try(self.client.cancel())
            elif known is None and queued is None:
                await self.ctx.command("job.external", job_id=f"ext-{uuid.uuid4().hex[:12]}",
                                       printer_id=self.printer_id, file_name=status.file_name)
        elif not printer["bed_clear"] and self.ctx.node.settings.auto_clear_bed:
            await self.ctx.command("printer.bed_cleared", id=self.printer_id)

    async def _starting(self, job: dict[str, Any], status: PrinterStatus) -> None:
        name = job["printer_filename"]
        if status.file_name == name and status.state in ("printing", "paused", "finished"):
            self._sent_at.pop(job["id"], None)
            await self.ctx.command("job.started", job_id=job["id"])
            return
        if status.state in ("printing", "paused"):
            await self.ctx.command("job.start_failed", job_id=job["id"],
                                   reason=f"printer is busy printing {status.file_name}")
            return
        claim_age = time.time() - (job["claimed_at"] or 0.0)
        if status.state in ("offline", "error"):
            if claim_age > CLAIM_TIMEOUT:  # give the job back; it may go to another printer
                await self.ctx.command("job.start_failed", job_id=job["id"], reason=(
                    f"printer {status.state} for {claim_age:.0f} s: {status.error or ''}"))
            return
        sent = self._sent_at.get(job["id"])
        if sent is None and job["claim_epoch"] != self.ctx.epoch and claim_age < START_GRACE:
            return  # an earlier leader may have sent it: let the printer show it first
        if sent is not None:
            if time.monotonic() - sent < START_GRACE:
                return  # sent a moment ago; wait for the printer to show it
            self._sent_at.pop(job["id"], None)
            await self.ctx.command("job.start_failed", job_id=job["id"],
                                   reason="the printer did not start the print")
            return
        data = await self.ctx.node.blob(job["file_id"])
        if data is None:
            await self.ctx.command("job.start_failed", job_id=job["id"],
                                   reason="the G-code file is on no reachable node")
            return
        try:
            await self.client.upload_and_start(name, data)
        except PrinterNoAnswer as exc:
            # It may have arrived: treat it as sent and let the printer show it (or not).
            log.warning("printer %s: start of job %s unanswered: %s", self.printer_id,
                        job["id"], exc)
        except PrinterError as exc:
            await self.ctx.command("job.start_failed", job_id=job["id"], reason=str(exc))
            return
        self._sent_at[job["id"]] = time.monotonic()
        log.info("printer %s: started job %s as %s", self.printer_id, job["id"], name)

    async def _running(self, printer: dict[str, Any], job: dict[str, Any],
                       status: PrinterStatus) -> None:
        name = job["printer_filename"]
        ours = status.file_name == name
        if ours and status.state in ("printing", "paused"):
            phase = "paused" if status.state == "paused" else "printing"
            if phase != job["phase"]:
                await self.ctx.command("job.phase", job_id=job["id"], phase=phase)
            if job["requested_action"] == "pause" and phase == "printing":
                await self._try(self.client.pause())
            elif job["requested_action"] == "resume" and phase == "paused":
                await self._try(self.client.resume())
        elif ours and status.state == "finished":
            await self.ctx.command("job.finished", job_id=job["id"])
            if job["from_server"]:
                await self._try(self.client.delete_file(name))
            if self.ctx.node.settings.auto_clear_bed:
                await self.ctx.command("printer.bed_cleared", id=self.printer_id)
        elif status.state == "offline":
            return  # the printer may come back; the job stays Running meanwhile
        elif status.state == "error":
            await self.ctx.command("job.lost", job_id=job["id"],
                                   cause=f"printer error: {status.error or 'unknown'}")
        else:
            await self.ctx.command("job.lost", job_id=job["id"], cause=self._why_gone(name))

    def _why_gone(self, name: str) -> str:
        if isinstance(self.client, MockPrinter) and name not in self.client.starts:
            return ("the mock printer was restarted: it lived in the previous leader's process")
        return "the printer no longer prints it (canceled at the printer, or restarted)"

    async def _try(self, call: Any) -> None:
        try:
            await call
        except PrinterBusy as exc:
            log.info("printer %s refused: %s", self.printer_id, exc)
        except PrinterError as exc:
            log.warning("printer %s: %s", self.printer_id, exc)
