"""Every node deletes the G-code blobs that no file record names any more.

Retention deletes file records in a replicated command; each node then compares its blob
directory with the records it has applied. A blob younger than BLOB_GRACE_SECONDS is kept
whatever the records say, because an upload stores (and copies) its blob before it commits
the record; the store refreshes a blob's time when the same content is stored again. A node
sweeps only while it is ready (caught up with the leader's commit index), so a node still
replaying its log never mistakes a blob it has not yet seen registered for garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from mes.files.store import SHA256_PATTERN, BlobStore
from mes.raft.applied import AppliedView
from mes.raft.readiness import not_ready_reasons, progress_of
from mes.service_port import ServicePort
from mes.state.machine import Outcome
from mes.state.queries import file_ids


class SweepPort(ServicePort, Protocol):
    """What the sweeper needs of its node: its Raft progress and its blob store too."""

    @property
    def raft(self) -> AppliedView:
        """The node's Raft engine (its progress only)."""

    @property
    def blobs(self) -> BlobStore:
        """This node's blob store."""

log = logging.getLogger(__name__)

INCOMING_PREFIX = ".incoming-"


def stale_blobs(store: BlobStore, known: Collection[str], older_than: float) -> list[Path]:
    """Blobs (and abandoned partial uploads) not in `known` and last written before
    `older_than` (a time.time() value)."""
    found: list[Path] = []
    root = store.root
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        shard = entry.is_dir() and len(entry.name) == 2
        candidates = list(entry.iterdir()) if shard else [entry]
        for path in candidates:
            name = path.name
            garbage = name.startswith(INCOMING_PREFIX) or (
                SHA256_PATTERN.match(name) is not None and name not in known)
            if garbage and _modified(path) < older_than:
                found.append(path)
    return found


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def remove_stale(store: BlobStore, known: Collection[str], grace: float) -> int:
    """Delete the stale blobs; return how many. Each is checked again just before it goes."""
    older_than = time.time() - grace
    removed = 0
    for path in stale_blobs(store, known, older_than):
        if _modified(path) < older_than:  # not stored again since it was listed
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


class BlobSweeper:
    """Sweeps this node's blob store every RETENTION_INTERVAL and soon after records go."""

    def __init__(self, node: SweepPort) -> None:
        self.node = node
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.removed = 0
        node.on_apply(self._on_apply)

    def _on_apply(self, _: Mapping[str, Any], outcome: Outcome) -> None:
        """On the Raft thread: wake the sweep when a command deleted file records."""
        if any(e.entity == "file" and e.change == "deleted" for e in outcome.events):
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._wake.set)

    def caught_up(self) -> bool:
        """Whether this node has heard the leader's commit index and is ready (applied to
        within a few entries of it, as readiness counts): a node replaying its journal, or
        back after an outage, has not yet seen the records of the blobs it holds."""
        progress = progress_of(self.node.raft)
        return progress.leader_commit_index is not None and not not_ready_reasons(progress)

    async def sweep(self) -> int:
        """One sweep if this node has caught up; how many files it deleted."""
        if not self.caught_up():
            return 0
        known = await self.node.read(file_ids)
        grace = self.node.settings.retention.blob_grace_seconds
        removed = await asyncio.to_thread(remove_stale, self.node.blobs, known, grace)
        if removed:
            log.info("deleted %d G-code blobs that no file record names", removed)
        self.removed += removed
        return removed

    async def run(self) -> None:
        """Until cancelled."""
        interval = self.node.settings.retention.interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping unreferenced G-code blobs failed; next sweep later")
