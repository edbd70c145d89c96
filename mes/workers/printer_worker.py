"""One printer's worker: each tick compares replicated state with the printer and commits
the difference.

Printers cannot check a fencing token, so a start that arrives late (held by the network,
or sent by a deposed leader) must be harmless: the file is uploaded first and started with
one short request; any failure after that request may have left counts as "maybe started";
waits are measured on this node's own clock only; and one of our files found printing where
its job is not running is cancelled at once and the printer held for an operator."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from mes.printers.base import (
    PrinterBusy,
    PrinterClient,
    PrinterError,
    PrinterNotSent,
    PrinterRefused,
    PrinterStatus,
)
from mes.printers.mock import MockPrinter
from mes.raft.writer import NoLeader
from mes.state import queries
from mes.state.ops import Op
from mes.workers.context import Fenced, WorkerContext

log = logging.getLogger(__name__)

# How many polls after a start must not show it before the job goes back to the queue
# (besides the printer_start_grace seconds).
START_CHECKS = 3
# How often deleting a cancelled print's file is tried before it is left on the printer.
LEFTOVER_TRIES = 5
# How long a claimed job waits for an offline printer before it goes back to the queue.
CLAIM_TIMEOUT = 60.0
OWN_FILE = re.compile(r"^mes-([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})\.b?gcode$")
MAX_BACKOFF = 30.0
# Tick lags each worker keeps for its statistics: (when, lag), at most LAG_HISTORY of
# them, and the statistics count only those of the last LAG_WINDOW seconds.
LAG_HISTORY = 60
LAG_WINDOW = 30.0


@dataclass
class StartWatch:
    """One starting job as this worker saw it, timed by this node's monotonic clock."""

    seen: float  # when this worker first saw the job starting
    sent: float | None = None  # when its start request may have left
    checks: int = 0  # polls since then that did not show the print


def phase(printer_id: str) -> float:
    """Where in the worker interval this printer's ticks fall, in [0, 1), fixed per id."""
    return (zlib.crc32(printer_id.encode()) % 10_000) / 10_000


def printer_filename(job: dict[str, Any]) -> str:
    """The unique name a job's file gets on the printer, which identifies the job there."""
    suffix = ".bgcode" if str(job.get("filepath", "")).lower().endswith(".bgcode") else ".gcode"
    return f"mes-{job['id']}{suffix}"


class PrinterWorker:
    """Polls one printer every interval and reconciles; never dies, backs off on errors."""

    def __init__(self, printer_id: str, client: PrinterClient, ctx: WorkerContext,
                 epoch: int) -> None:
        self.printer_id = printer_id
        self.client = client
        self.ctx = ctx
        # The assignment epoch this worker drives its printer under; every command carries
        # it, and a stale one stops this worker.
        self.epoch = epoch
        # Set when the printer is being handed to another node: stop after this tick.
        self.retiring = False
        self._watches: dict[str, StartWatch] = {}
        self._failures = 0
        self._online: bool | None = None
        # Our files left on the printer by a cancelled print: deleted once it stops printing.
        self._leftovers: dict[str, int] = {}
        self.ticks = 0
        self.lags: deque[tuple[float, float]] = deque(maxlen=LAG_HISTORY)

    async def run(self) -> None:
        """Tick until cancelled, retired or fenced."""
        interval = self.ctx.node.settings.printers.worker_interval
        metrics = self.ctx.metrics
        # Workers started together (a new leader starts them all at once) would otherwise
        # tick together: 1,000 polls in one burst each interval, the last ones late by the
        # whole burst. Each starts at its own fixed point of the interval instead.
        next_tick = time.monotonic() + interval * phase(self.printer_id)
        await asyncio.sleep(next_tick - time.monotonic())
        while not self.ctx.fenced and not self.retiring:
            now = time.monotonic()
            lag = max(0.0, now - next_tick)
            self.lags.append((now, lag))
            metrics.tick_lag.observe(lag)
            try:
                await self.tick()
                self._failures = 0
            except Fenced as exc:
                log.warning("printer %s: this node no longer drives it (%s): worker stopped",
                            self.printer_id, exc)
                return
            except asyncio.CancelledError:
                raise
            except NoLeader as exc:  # a failover: expected, retried with backoff
                self._failures += 1
                log.info("printer %s: no leader to commit to (%s); retrying", self.printer_id,
                         exc)
            except Exception:
                self._failures += 1
                log.exception("worker of printer %s failed (%d in a row)", self.printer_id,
                              self._failures)
            self.ticks += 1
            metrics.ticks.inc()
            pause = interval if not self._failures else min(interval * 2**self._failures,
                                                             MAX_BACKOFF)
            next_tick = max(next_tick + pause, time.monotonic())
            await asyncio.sleep(next_tick - time.monotonic())

    def guard(self) -> None:
        """Raise Fenced unless this node may talk to the printer now (see may_act)."""
        if not self.ctx.may_act(self.printer_id, self.epoch):
            raise Fenced(f"printer {self.printer_id} is no longer driven here under epoch "
                         f"{self.epoch} (moved, or this node's lease lapsed)", self.printer_id)

    async def command(self, op: str, **args: Any) -> dict[str, Any] | None:
        """A command about this printer, carrying its id and this worker's epoch."""
        if "id" not in args:
            args.setdefault("printer_id", self.printer_id)
        return await self.ctx.command(op, for_printer=self.printer_id, epoch=self.epoch,
                                      **args)

    async def poll(self, expect_job: bool = True) -> PrinterStatus:
        """The printer's status, or offline with the reason; raises only Fenced."""
        self.guard()
        timeout = max(2.0, self.ctx.node.settings.printers.worker_interval * 5)
        try:
            async with asyncio.timeout(timeout):  # no extra task per poll, unlike wait_for
                status = await self.client.status(expect_job)
        except (PrinterError, TimeoutError) as exc:
            self.ctx.metrics.polls_failed.inc()
            status = PrinterStatus(state="offline", error=str(exc) or "timed out")
        except Exception as exc:  # a printer answering nonsense must not stop the worker
            self.ctx.metrics.polls_failed.inc()
            # the exception may quote the far side: name its type only
            log.warning("printer %s: unreadable status (%s)", self.printer_id,
                        type(exc).__name__)
            status = PrinterStatus(state="offline",
                                   error="unexpected answer from the printer")
        self.ctx.saw(self.printer_id, status)
        self._log_reachability(status)
        return status

    def _log_reachability(self, status: PrinterStatus) -> None:
        """One log line when the printer goes offline (with the reason) or comes back."""
        online = status.state != "offline"
        if online == self._online:
            return
        if online:
            log.info("printer %s is online (%s)", self.printer_id, status.state)
        else:
            log.warning("printer %s is offline: %s", self.printer_id, status.error or "no answer")
        self._online = online

    async def tick(self) -> None:
        """One reconciliation."""
        view = self.ctx.view()
        status = await self.poll(expect_job=self.printer_id in view.active_jobs)
        view = self.ctx.view()
        printer = view.printers.get(self.printer_id)
        if printer is None:
            return
        job = view.active_jobs.get(self.printer_id)
        self._watches = {k: w for k, w in self._watches.items() if job and k == job["id"]}
        if self._leftovers and status.state in ("idle", "finished"):
            await self._delete_leftovers()
        if job is None:
            await self._without_job(printer, status)
        elif job["phase"] == "starting":
            await self._starting(job, status)
        else:
            await self._running(printer, job, status)

    async def _without_job(self, printer: dict[str, Any], status: PrinterStatus) -> None:
        if status.state in ("printing", "paused") and status.file_name:
            name = str(status.file_name)
            own = OWN_FILE.match(name)
            if own:
                await self._own_file_without_job(name, own.group(1))
                return
            known = self.ctx.node.read_now(
                lambda c: queries.job_by_printer_file(c, self.printer_id, name))
            if known is not None and known["status"] == "Canceled":
                log.info("printer %s still prints canceled job %s: cancelling", self.printer_id,
                         known["id"])
                await self._try(self.client.cancel())
            elif known is None:
                await self.command(Op.JOB_EXTERNAL, job_id=f"ext-{uuid.uuid4().hex[:12]}",
                                       printer_id=self.printer_id, file_name=name)
        elif (not printer["bed_clear"] and not printer.get("attention")
              and self.ctx.node.settings.printers.auto_clear_bed):
            await self.command(Op.PRINTER_BED_CLEARED, id=self.printer_id)

    async def _own_file_without_job(self, name: str, job_id: str) -> None:
        """One of our files prints here while no job is claimed or running here."""
        job = self.ctx.node.read_now(lambda c: queries.get_job(c, job_id))
        if job is not None and job["status"] == "Queued" and job["phase"] is None:
            # A start that went back to the queue arrived after all: take the job back if
            # the rules let this printer have it, rather than let it print a second time.
            if await self.command(Op.JOB_CLAIM, job_id=job_id, printer_id=self.printer_id,
                                  printer_filename=name) is not None:
                self.ctx.claimed.add(job_id)
                log.warning("printer %s prints queued job %s (a late start): claimed it here",
                            self.printer_id, job_id)
                return
            why = "its job went back to the queue and cannot be claimed here"
        elif job is None:
            why = "no such job"
        elif job["status"] == "Canceled" and job["assigned_printer_id"] == self.printer_id \
                and self._ran_here(job_id):
            log.info("printer %s still prints canceled job %s: cancelling", self.printer_id,
                     job_id)
            await self._try(self.client.cancel())
            self._leftovers.setdefault(name, 0)
            return
        elif job["status"] in ("Done", "Canceled"):
            why = f"its job is {job['status']}"
        else:
            why = f"its job is {job['status']} on printer {job['assigned_printer_id']}"
        await self._stray(name, why)

    def _ran_here(self, job_id: str) -> bool:
        history = self.ctx.node.read_now(lambda c: queries.job_history_of(c, job_id))
        return any(h["to_status"] == "Running" for h in history)

    async def _stray(self, name: str, why: str) -> None:
        """Cancel a print of ours that must not run here (a late start), at once, and hold
        the printer for an operator.

        The hold is committed first: a deposed leader, whose view may be stale, cannot
        commit, so it never cancels a print the current leader started.
        """
        log.error("printer %s prints %s, which must not print there (%s): a late start; "
                  "cancelling it and holding the printer for an operator",
                  self.printer_id, name, why)
        reason = (f"cancelled {name}, started late ({why}); check the printer and its bed, "
                  "then clear the bed")
        if await self.command(Op.PRINTER_ATTENTION, id=self.printer_id,
                                  reason=reason[:1000]) is None:
            return
        await self._try(self.client.cancel())
        self._leftovers.setdefault(name, 0)

    async def _delete_leftovers(self) -> None:
        """Delete our files of cancelled prints from the printer (a few tries each)."""
        for name, tries in list(self._leftovers.items()):
            self.guard()
            try:
                await self.client.delete_file(name)
            except PrinterError as exc:
                if tries + 1 < LEFTOVER_TRIES:
                    self._leftovers[name] = tries + 1
                    continue
                log.warning("printer %s: could not delete %s: %s", self.printer_id, name, exc)
            self._leftovers.pop(name, None)

    async def _starting(self, job: dict[str, Any], status: PrinterStatus) -> None:
        name = job["printer_filename"]
        now = time.monotonic()
        watch = self._watches.setdefault(job["id"], StartWatch(seen=now))
        if status.file_name == name and status.state in ("printing", "paused", "finished"):
            self._watches.pop(job["id"], None)
            await self.command(Op.JOB_STARTED, job_id=job["id"])
            return
        if status.state in ("printing", "paused"):
            other = str(status.file_name or "")
            if OWN_FILE.match(other):
                await self._stray(other, f"job {job['id']} is starting there")
            # a name of ours may be quoted; any other is the far side's text
            shown = other if OWN_FILE.match(other) else "another file"
            await self._start_failed(job, f"printer is busy printing {shown}")
            return
        if status.state in ("offline", "error"):
            if now - watch.seen > CLAIM_TIMEOUT:  # give the job back; it may go elsewhere
                await self._start_failed(job, (
                    f"printer {status.state} for {now - watch.seen:.0f} s: {status.error or ''}"))
            return
        grace = self.ctx.node.settings.printers.start_grace
        if watch.sent is None:
            if job["id"] not in self.ctx.claimed and now - watch.seen < grace:
                return  # an earlier driver may have sent it: let the printer show it first
            await self._send_start(job, watch)
            return
        watch.checks += 1
        if now - watch.sent < grace or watch.checks < START_CHECKS:
            return  # sent (or maybe sent) a moment ago; wait for the printer to show it
        await self._start_failed(job, (
            f"the printer did not show the print within {grace:g} s; if the start arrives "
            "later it will be cancelled"))
        # A start still on its way then finds no file to print.
        await self._try(self.client.delete_file(name))

    async def _send_start(self, job: dict[str, Any], watch: StartWatch) -> None:
        """Upload the file, then start it with one short request under a deadline."""
        name = job["printer_filename"]
        data = await self.ctx.node.blob(job["file_id"])
        if data is None:
            await self._start_failed(job, "the G-code file is on no reachable node")
            return
        self.guard()
        try:
            await self.client.upload(name, data)
        except PrinterError as exc:  # nothing was started: an upload alone prints nothing
            await self._start_failed(job, f"upload failed: {exc}")
            return
        if await self.command(Op.JOB_SENDING, job_id=job["id"],
                                  printer_id=self.printer_id) is None:
            return  # no longer claimed here (canceled meanwhile): send nothing
        self.guard()
        watch.sent = time.monotonic()  # from here on the start may arrive, now or later
        try:
            async with asyncio.timeout(self._deadline()):
                await self.client.start(name)
        except PrinterBusy as exc:
            # Not started by this request, but maybe by an earlier one (an inherited start
            # that just arrived): the next polls tell, so the job is not queued again yet.
            log.info("printer %s refused the start of job %s: %s", self.printer_id,
                     job["id"], exc)
            return
        except (PrinterNotSent, PrinterRefused) as exc:
            await self._start_failed(job, str(exc))  # certainly not started by this request
            return
        except (PrinterError, TimeoutError) as exc:
            # It may have arrived or may still arrive: the printer will show it (or not).
            log.warning("printer %s: start of job %s unanswered, maybe started: %s",
                        self.printer_id, job["id"], exc or "deadline passed")
            return
        log.info("printer %s: started job %s as %s", self.printer_id, job["id"], name)

    async def _start_failed(self, job: dict[str, Any], reason: str) -> None:
        self._watches.pop(job["id"], None)
        await self.command(Op.JOB_START_FAILED, job_id=job["id"], reason=reason)

    def _deadline(self) -> float:
        return max(2.0, self.ctx.node.settings.printers.worker_interval * 5)

    async def _running(self, printer: dict[str, Any], job: dict[str, Any],
                       status: PrinterStatus) -> None:
        name = job["printer_filename"]
        ours = status.file_name == name
        if ours and status.state in ("printing", "paused"):
            phase = "paused" if status.state == "paused" else "printing"
            if phase != job["phase"]:
                await self.command(Op.JOB_PHASE, job_id=job["id"], phase=phase)
            if job["requested_action"] == "pause" and phase == "printing":
                await self._try(self.client.pause())
            elif job["requested_action"] == "resume" and phase == "paused":
                await self._try(self.client.resume())
        elif ours and status.state == "finished":
            await self.command(Op.JOB_FINISHED, job_id=job["id"])
            if job["from_server"]:
                await self._try(self.client.delete_file(name))
            if self.ctx.node.settings.printers.auto_clear_bed and not printer.get("attention"):
                await self.command(Op.PRINTER_BED_CLEARED, id=self.printer_id)
        elif status.state == "offline":
            return  # the printer may come back; the job stays Running meanwhile
        elif status.state == "error":
            await self.command(Op.JOB_LOST, job_id=job["id"],
                                   cause=f"printer error: {status.error or 'unknown'}")
        else:
            other = str(status.file_name or "")
            if status.state in ("printing", "paused") and OWN_FILE.match(other):
                await self._stray(other, f"job {job['id']} was running there")
            await self.command(Op.JOB_LOST, job_id=job["id"], cause=self._why_gone(name))

    def _why_gone(self, name: str) -> str:
        if isinstance(self.client, MockPrinter) and name not in self.client.starts:
            return ("the mock printer was restarted: it lived in the process of the node that "
                    "drove it before")
        return "the printer no longer prints it (canceled at the printer, or restarted)"

    async def _try(self, call: Any) -> None:
        try:
            self.guard()
        except Fenced:
            call.close()  # never sent
            raise
        try:
            await call
        except PrinterBusy as exc:
            log.info("printer %s refused: %s", self.printer_id, exc)
        except PrinterError as exc:
            log.warning("printer %s: %s", self.printer_id, exc)
