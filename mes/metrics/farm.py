"""Gauges read at scrape time: Raft progress, printers by state, jobs by status, blob store.

`collect` runs on the thread that renders the scrape (never the event loop): it reads the
Raft engine's counters, two GROUP BY queries on a reader connection, and a scan of the
blob store at most every BLOB_SCAN_SECONDS.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection

from mes.files.store import BlobStore
from mes.raft.applied import AppliedView
from mes.raft.cluster import ROLES
from mes.state.farm_counts import jobs_by_status, printers_by_state

T = TypeVar("T")


class ScrapedNode(Protocol):
    """What the collector reads of its node (mes.node.FarmNode is one)."""

    @property
    def raft(self) -> AppliedView:
        """The node's Raft engine (its counters only)."""

    @property
    def blobs(self) -> BlobStore:
        """This node's blob store."""

    def read_now(self, query: Callable[[Connection], T]) -> T:
        """Read the applied state on the calling thread."""

    def workers_running(self) -> int:
        """How many printer workers run on this node."""

# The blob store is scanned again when this node stored a blob, else at most this often (a
# scan stats every file).
BLOB_SCAN_SECONDS = 30.0


def blob_usage(root: Path) -> tuple[int, int]:
    """(files, bytes) of the blobs under `root` (files being received are not counted)."""
    files = size = 0
    try:
        shards = list(os.scandir(root))
    except OSError:
        return 0, 0
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(shard.path))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            files += 1
    return files, size


class FarmCollector(Collector):
    """Reads the node's current state whenever the registry is collected."""

    def __init__(self, node: ScrapedNode) -> None:
        self._node = node
        self._blobs: tuple[float, int, int, int] | None = None
        self._blob_lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """Every gauge of this collector, as of now."""
        yield from self._raft()
        counts = self._node.read_now(lambda c: (printers_by_state(c), jobs_by_status(c)))
        by_state = GaugeMetricFamily("mes_printers", "Printers in each state now "
                                     "(as the utilisation report counts them)", labels=["state"])
        for state, count in counts[0].items():
            by_state.add_metric([state], count)
        yield by_state
        by_status = GaugeMetricFamily("mes_print_jobs", "Print jobs with each status",
                                      labels=["status"])
        for status, count in counts[1].items():
            by_status.add_metric([status], count)
        yield by_status
        files, size = self._blob_usage()
        yield GaugeMetricFamily("mes_blob_store_files", "G-code files stored on this node",
                                value=files)
        yield GaugeMetricFamily("mes_blob_store_bytes", "Bytes of G-code stored on this node",
                                value=size)
        yield GaugeMetricFamily("mes_workers_running", "Printer workers running on this node",
                                value=self._node.workers_running())

    def _raft(self) -> Iterator[Metric]:
        raft = self._node.raft
        # Attributes, not getStatus(): that walks dicts the Raft thread may be changing.
        state = getattr(raft, "_SyncObj__raftState", None)
        role = GaugeMetricFamily("mes_raft_role", "1 for this node's current Raft role",
                                 labels=["role"])
        for code, name in ROLES.items():
            role.add_metric([name], 1.0 if state == code else 0.0)
        yield role
        commit, applied = int(raft.raftCommitIndex), int(raft.raftLastApplied)
        yield GaugeMetricFamily("mes_raft_term", "Current Raft term",
                                value=int(raft.raftCurrentTerm))
        yield GaugeMetricFamily("mes_raft_commit_index", "Raft commit index", value=commit)
        yield GaugeMetricFamily("mes_raft_applied_index", "Raft log index applied to the "
                                "state machine", value=applied)
        yield GaugeMetricFamily("mes_raft_apply_lag", "Committed entries not yet applied "
                                "(commit index - applied index)", value=max(0, commit - applied))

    def _blob_usage(self) -> tuple[int, int]:
        with self._blob_lock:
            now, stored = time.monotonic(), self._node.blobs.stored
            if (self._blobs is None or now - self._blobs[0] > BLOB_SCAN_SECONDS
                    or stored != self._blobs[3]):
                files, size = blob_usage(self._node.blobs.root)
                self._blobs = (now, files, size, stored)
            return self._blobs[1], self._blobs[2]
