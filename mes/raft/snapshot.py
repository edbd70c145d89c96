"""Snapshot files: the SQLite image of the state machine plus pysyncobj's own data.

Only the image is taken on the Raft thread (SQLite's serialize: a memory copy); compressing,
writing and syncing happen in a background thread, and the finished file is renamed into
place on the Raft thread when pysyncobj next asks (`check`, its serializeChecker), before it
drops the journal entries the snapshot covers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from mes.raft import wire
from mes.raft.journal import fsync_dir, move_aside, stop_unrecoverable
from mes.state.errors import NewerData
from mes.state.machine import StateMachine, stop_newer
from mes.version import DATA_LEVEL, RELEASE, SCHEMA, SCHEMA_MIN_READER

# The container's name, the same since release 0.1.0 (which refuses any other): what the
# image holds is told by `schema` (the SQLite image's, migrated on restore) and `min_reader`
# (the oldest schema whose code may read it; a node older than that stops, exit status 2).
FORMAT = "mes-snapshot-3"
log = logging.getLogger(__name__)


class _Write:
    """One snapshot being compressed and synced to `<final>.writing` in a background thread."""

    def __init__(self, final: str, payload: dict[str, Any], generation: int) -> None:
        self.final = final
        self.tmp = final + ".writing"
        self.generation = generation
        self.error: BaseException | None = None
        self._payload: dict[str, Any] | None = payload
        self.thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)

    def _run(self) -> None:
        try:
            # Not compressed: gzip of a 17 MB image took about 100 ms of CPU on each node at
            # the same moment, enough on 2 cores to delay heartbeats into an election.
            with open(self.tmp, "wb") as raw:
                pickle.dump(self._payload, raw, protocol=pickle.HIGHEST_PROTOCOL)
                raw.flush()
                os.fsync(raw.fileno())
        except BaseException as exc:  # reported by check() on the Raft thread
            self.error = exc
        finally:
            self._payload = None


def snapshot_versions() -> dict[str, Any]:
    """What a snapshot written now says of the code that wrote it."""
    return {"schema": SCHEMA, "min_reader": SCHEMA_MIN_READER, "release": RELEASE,
            "level": DATA_LEVEL}


def refuse_newer(payload: dict[str, Any], source: str) -> None:
    """Raise NewerData if this code may not read a snapshot `payload` (0.1.0's have no
    versions: schema 1, readable)."""
    min_reader = payload.get("min_reader", 1)
    if not isinstance(min_reader, int) or min_reader > SCHEMA:
        raise NewerData(
            f"{source} was written by release {payload.get('release', '?')} (schema "
            f"{payload.get('schema', '?')}, readable from schema {min_reader}); this node runs "
            f"release {RELEASE} (schema {SCHEMA}) and cannot read it. Upgrade this node.")


def _load(file_name: str) -> Any:
    """A snapshot's payload (an earlier version's gzip file is unreadable: rebuilt)."""
    with open(file_name, "rb") as src:
        return wire.load(src)


class SnapshotFiles:
    """pysyncobj's custom serializer, checker and deserializer, bound to one state machine."""

    def __init__(self, machine: StateMachine) -> None:
        self._machine = machine
        self._write: _Write | None = None
        self._generation = 0
        # Set by RaftNode: forget the log so that the leader sends a snapshot again. None on a
        # node without peers: an unreadable snapshot then stops it (nothing to rebuild from).
        self.on_unreadable: Callable[[], None] | None = None
        # Set by RaftNode: called with pysyncobj's data of a snapshot being loaded, before
        # pysyncobj compares the journal with it (see DurableSyncObj._align_journal).
        self.on_loaded: Callable[[Any], None] | None = None
        self.raft_thread_seconds = 0.0
        self.completed = 0

    def serialize(self, file_name: str, raft_data: Any) -> None:
        """Take the image on the Raft thread and start writing it in the background.

        pysyncobj then renames `file_name` over the snapshot; this never creates that file,
        so its rename fails harmlessly and `check` reports the outcome instead.
        """
        started = time.perf_counter()
        final = file_name.removesuffix(".tmp")
        payload = {"format": FORMAT, "db": self._machine.snapshot(), "raft": raft_data,
                   **snapshot_versions()}
        self._write = _Write(final, payload, self._generation)
        self._write.thread.start()
        self.raft_thread_seconds = time.perf_counter() - started

    def check(self) -> int:
        """pysyncobj's serializeChecker: the state of the background write (Raft thread)."""
        write = self._write
        if write is None:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)
        if write.thread.is_alive():
            return int(SERIALIZER_STATE.SERIALIZING)
        self._write = None
        if write.error is not None or write.generation != self._generation:
            with contextlib.suppress(OSError):
                os.remove(write.tmp)
            if write.error is not None:
                log.error("writing the snapshot %s failed: %s", write.tmp, write.error)
            return int(SERIALIZER_STATE.FAILED)  # a snapshot installed meanwhile supersedes it
        os.replace(write.tmp, write.final)
        fsync_dir(write.final)
        self.completed += 1
        return int(SERIALIZER_STATE.SUCCESS)

    def deserialize(self, file_name: str) -> Any:
        """Load the database from a snapshot file and hand pysyncobj its data back.

        pysyncobj swallows a failure here and would replay the compacted journal onto an
        empty database, silently diverging from the other nodes. So an unreadable snapshot is
        moved aside and the log emptied (the leader sends a snapshot again); without peers
        the node stops.
        """
        self._generation += 1  # a background write of an older state must not replace this one
        try:
            _sync_file(file_name)  # pysyncobj renamed a received snapshot here without a sync
            payload = _load(file_name)
            if not isinstance(payload, dict) or payload.get("format") != FORMAT:
                raise ValueError(f"{file_name} is not a mes snapshot")
            refuse_newer(payload, file_name)
            self._machine.restore(payload["db"])
        except NewerData as exc:
            stop_newer(str(exc))
        except Exception as exc:
            self._unreadable(file_name, exc)
            raise
        if self.on_loaded is not None:
            self.on_loaded(payload["raft"])
        return payload["raft"]

    def _unreadable(self, file_name: str, exc: Exception) -> None:
        if self.on_unreadable is None:
            stop_unrecoverable(
                f"cannot load the snapshot {file_name} ({exc!r}) and this node has no peers to "
                "rebuild from: stopping rather than diverging. Restore it from a backup.")
        aside = move_aside(file_name)
        log.critical("cannot load the snapshot %s (%r): moved to %s; this node starts with an "
                     "empty log and rebuilds from its peers", file_name, exc, aside)
        self._machine.reset()
        self.on_unreadable()


def _sync_file(path: str) -> None:
    with open(path, "rb") as src:
        os.fsync(src.fileno())
    fsync_dir(path)
