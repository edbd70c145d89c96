"""Keeps the address space equal to the applied state, driven by the state machine's events.

The state machine calls `listener` on the Raft thread after every apply; the changed entities
are handed to the server's event loop, coalesced, and applied in paced passes: the changed
rows are read (one read transaction per pass), objects added or removed, changed values
written in batches, and the job events emitted from the job history. A restored snapshot
triggers a full resynchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import Connection

from mes.app.ports import ChangeFeed
from mes.opcua.address_space import AddressSpace, Change
from mes.opcua.events import FarmEvents
from mes.opcua.farm_state import (
    RECENT_JOBS,
    FarmState,
    PrinterView,
    read_farm,
    read_filaments,
    read_history,
    read_jobs,
    read_printers,
    read_statuses,
)
from mes.state.machine import Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")
Reader = Callable[[Callable[[Connection], T]], Awaitable[T]]

ENTITIES = frozenset({"printer", "printer_status", "filament", "print_job"})
# Seconds between passes: changes arriving meanwhile are coalesced into the next pass.
PACE = 0.05
HISTORY_PAGE = 5_000
# A job history entry older than this (by its command's time) is not news: a node that
# restarts replays its journal, and its clients must not get those transitions again.
EVENT_MAX_AGE = 60.0
ENDED = ("Done", "Canceled")


class Mirror:
    """Mirrors the farm's state into an AddressSpace."""

    def __init__(self, feed: ChangeFeed, read: Reader[Any], space: AddressSpace,
                 events: FarmEvents | None, recent_jobs: int = RECENT_JOBS) -> None:
        self.feed = feed
        self._read = read
        self.space = space
        self.events = events
        self.recent_jobs = recent_jobs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._rebuild = True
        self._printers: set[str] = set()
        self._statuses: set[str] = set()  # printers whose status alone changed
        self._views: dict[str, PrinterView] = {}  # each printer as last shown
        self._jobs: set[str] = set()
        self._filaments: set[str] = set()
        self._history_seq = 0
        self._ended: dict[str, float] = {}  # shown finished job -> updated_at
        self._job_printer: dict[str, str] = {}  # current job shown on a printer -> printer
        self._printer_job: dict[str, str] = {}  # and back: printer -> its current job
        self.build_seconds: float | None = None
        self.build_cpu_seconds: float | None = None  # this thread's CPU (reads excluded)
        self.passes = 0
        self.built = asyncio.Event()
        # The highest Raft index whose changes reached the loop, and the highest whose changes
        # the address space shows: a method that committed at index i answers once i is shown.
        self._noted_index = 0
        # Told on the loop of every change noted: True when a printer, job or spool changed
        # (or the state was replaced), False when only printers' statuses did.
        self.on_noted: Callable[[bool], None] | None = None
        self.shown_index = 0
        self._shown = asyncio.Condition()

    # -- wiring (any thread)

    def attach(self) -> None:
        """Listen to the state machine (call on the server's event loop)."""
        self._loop = asyncio.get_running_loop()
        self.feed.on_apply(self.listener)
        self.feed.on_restore(self.request_rebuild)  # a snapshot replaced the state

    def detach(self) -> None:
        """Stop listening (the listeners stay registered but do nothing)."""
        self._loop = None

    def listener(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        """A state machine listener (Raft thread): hand the changes to the event loop."""
        loop = self._loop
        if loop is None or not outcome.events:
            return
        changes = [(e.entity, e.entity_id) for e in outcome.events if e.entity in ENTITIES]
        if changes:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._note, changes, outcome.index)

    def request_rebuild(self) -> None:
        """Resynchronise everything from the state (any thread)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._full)

    def _full(self) -> None:
        self._rebuild = True
        self._wake.set()
        if self.on_noted is not None:
            self.on_noted(True)

    def _note(self, changes: list[tuple[str, str]], index: int = 0) -> None:
        self._noted_index = max(self._noted_index, index)
        if self.on_noted is not None:
            self.on_noted(any(entity != "printer_status" for entity, _ in changes))
        for entity, entity_id in changes:
            if entity == "printer_status":
                self._statuses.add(entity_id)
            elif entity == "printer":
                self._printers.add(entity_id)
            elif entity == "print_job":
                self._jobs.add(entity_id)
            else:
                self._filaments.add(entity_id)
        self._wake.set()

    # -- the passes (event loop)

    async def run(self) -> None:
        """Build, then apply changes as they come, until cancelled."""
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            target = self._noted_index
            try:
                if self._rebuild:
                    await self._build()
                else:
                    await self._apply()
                await self._show(target)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mirroring the farm into OPC UA failed; resynchronising")
                self._rebuild = True
                self._wake.set()
                await asyncio.sleep(1.0)
            self.passes += 1
            await asyncio.sleep(PACE)

    async def wait_shown(self, index: int, timeout: float) -> bool:
        """Wait until the address space shows the changes of Raft index `index` (those of
        the farm's printers, jobs and spools); False if it did not within `timeout` s."""
        async with self._shown:
            try:
                async with asyncio.timeout(timeout):
                    await self._shown.wait_for(lambda: self.shown_index >= index)
            except TimeoutError:
                return False
        return True

    async def _show(self, index: int) -> None:
        if index > self.shown_index:
            async with self._shown:
                self.shown_index = index
                self._shown.notify_all()

    async def _build(self) -> None:
        self._rebuild = False
        self._printers.clear()
        self._statuses.clear()
        self._jobs.clear()
        self._filaments.clear()
        started, cpu = time.perf_counter(), time.thread_time()
        state: FarmState = await self._read(lambda conn: read_farm(conn, self.recent_jobs))
        await self.space.sync(state)
        self._views = dict(state.printers)
        self._history_seq = state.history_seq
        self._ended = {jid: float(job["updated_at"]) for jid, job in state.jobs.items()
                       if job["status"] in ENDED}
        self._printer_job = {pid: str(view.job["id"]) for pid, view in state.printers.items()
                             if view.job}
        self._job_printer = {jid: pid for pid, jid in self._printer_job.items()}
        if self.build_seconds is None:
            self.build_seconds = time.perf_counter() - started
            self.build_cpu_seconds = time.thread_time() - cpu
            log.info("OPC UA address space built in %.2f s (%.2f s CPU): %d printers, %d jobs, "
                     "%d spools, %d nodes", self.build_seconds, self.build_cpu_seconds,
                     len(state.printers), len(state.jobs), len(state.filaments),
                     self.space.node_count)
        else:
            log.info("OPC UA address space resynchronised in %.2f s",
                     time.perf_counter() - started)
        self.built.set()

    async def _apply(self) -> None:
        printers, self._printers = self._printers, set()
        statuses, self._statuses = self._statuses, set()
        jobs, self._jobs = self._jobs, set()
        spools, self._filaments = self._filaments, set()
        seq = self._history_seq
        also = {self._job_printer[j] for j in jobs if j in self._job_printer}
        spool_of = self.space.loaded_spools()
        also |= {pid for pid, sid in spool_of.items() if sid in spools}
        known = self._views

        def query(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]],
                                             dict[str, dict[str, Any]],
                                             dict[str, PrinterView | None]]:
            history = read_history(conn, seq, HISTORY_PAGE)
            job_rows = read_jobs(conn, jobs | {h["job_id"] for h in history})
            spool_rows = read_filaments(conn, spools)
            affected = printers | also | {
                j["assigned_printer_id"] for jid, j in job_rows.items()
                if jid in jobs and j["assigned_printer_id"]}
            # A printer whose status alone changed (telemetry, the common case) keeps the
            # rest of its view: only its status row is read.
            status_only = {pid for pid in statuses - affected if pid in known}
            views = read_printers(conn, affected | (statuses - status_only))
            for pid, status in read_statuses(conn, status_only).items():
                views[pid] = replace(known[pid], status=status)
            return history, job_rows, spool_rows, views

        history, job_rows, spool_rows, views = await self._read(query)
        changes: list[Change] = []
        for sid in spools - set(spool_rows):
            await self.space.drop_filament(sid)
        changes += await self.space.put_filaments(spool_rows.values())
        for jid in jobs - set(job_rows):  # deleted by retention
            self._ended.pop(jid, None)
            await self.space.drop_job(jid)
        changes += await self._put_jobs([job_rows[j] for j in jobs if j in job_rows])
        for pid, view in views.items():
            shown = self._printer_job.pop(pid, None)
            if shown is not None and self._job_printer.get(shown) == pid:
                del self._job_printer[shown]
            if view is None:
                self._views.pop(pid, None)
                await self.space.drop_printer(pid)
                continue
            self._views[pid] = view
            if view.job:
                jid = str(view.job["id"])
                self._job_printer[jid] = pid
                self._printer_job[pid] = jid
        changes += await self.space.put_printers(v for v in views.values() if v is not None)
        await self.space.write(changes)
        await self._emit(history, job_rows)
        if len(history) >= HISTORY_PAGE:
            self._wake.set()

    async def _put_jobs(self, rows: list[dict[str, Any]]) -> list[Change]:
        for job in rows:
            if job["status"] in ENDED:
                self._ended[job["id"]] = float(job["updated_at"])
        excess = len(self._ended) - self.recent_jobs
        dropped: set[str] = set()
        if excess > 0:
            oldest = sorted(self._ended.items(), key=lambda kv: (kv[1], kv[0]))[:excess]
            for jid, _ in oldest:
                del self._ended[jid]
                dropped.add(jid)
                await self.space.drop_job(jid)
        return await self.space.put_jobs(j for j in rows if j["id"] not in dropped)

    async def _emit(self, history: list[dict[str, Any]],
                    job_rows: dict[str, dict[str, Any]]) -> None:
        if history:
            self._history_seq = int(history[-1]["seq"])
        if self.events is None:
            return
        shown = self.space.printer_ids
        oldest = time.time() - EVENT_MAX_AGE
        for entry in history:
            before, after = entry["from_status"], entry["to_status"]
            if before == after or entry["at"] < oldest:
                continue
            job = job_rows.get(entry["job_id"], {})
            pid = str(job.get("assigned_printer_id") or job.get("printer_id") or "")
            node = self.space.printer_node(pid) if pid in shown else None
            seq, at = int(entry["seq"]), float(entry["at"])
            await self.events.job_status_changed(seq, at, entry["job_id"], node, pid, before,
                                                 after)
            if job:
                await self.events.job_order_status(seq, at, job, after)
            if after == "Done":
                await self.events.print_completed(
                    seq, at, entry["job_id"], node, pid,
                    before == "Running" and bool(job.get("assigned_printer_id")))
