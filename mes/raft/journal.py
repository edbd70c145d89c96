"""pysyncobj's file journal, made durable: synced before an entry counts as stored.

pysyncobj (pinned 0.3.17) writes its journal through an mmap and never syncs it; its meta
file (term, vote, commit index) is renamed into place without a sync either. `SyncedJournal`
keeps pysyncobj's file format and adds:

- `sync()`: one msync for every entry written since the last one (group commit); RaftNode
  calls it before the leader counts itself toward a commit and before a follower answers;
- the meta file is written to a temporary file, synced, renamed and its directory synced;
- compaction (`deleteEntriesTo`) writes the remaining entries to a new file and renames it,
  instead of rewriting the live file in place, so a crash never leaves half a journal;
- a check at open: a journal whose records do not chain (torn or corrupt) raises
  `CorruptJournal` instead of yielding garbage entries.

With `trace` set (tests only) every sync also records what is on disk in `<journal>.synced`,
so a test can cut the files back to exactly what a power cut would leave.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Any, NoReturn

from pysyncobj.journal import (
    FIRST_RECORD_OFFSET,
    LAST_RECORD_OFFSET_OFFSET,
    FileJournal,
    MetaStorer,
    ResizableFile,
)
from pysyncobj.pickle import dumps, to_bytes

EXIT_BAD_STORAGE = 70
log = logging.getLogger(__name__)


class CorruptJournal(Exception):
    """The journal file cannot be read back as a chain of entries."""


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in `path`'s directory durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` through a synced temporary file and a synced rename; with
    `mode`, the file has that mode from its creation on (whatever the umask)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
    if mode is not None:
        os.fchmod(fd, mode)  # a leftover .tmp keeps its old mode through O_CREAT
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path)


def move_aside(path: str) -> str:
    """Rename an unreadable file to `<path>.bad-<time>` (kept for inspection); return the name."""
    aside = f"{path}.bad-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    os.replace(path, aside)
    fsync_dir(path)
    return aside


def stop_unrecoverable(message: str) -> NoReturn:
    """Log why this node cannot start safely and exit with EXIT_BAD_STORAGE."""
    log.critical("%s", message)
    logging.shutdown()
    os._exit(EXIT_BAD_STORAGE)


class _SyncedMeta(MetaStorer):  # type: ignore[misc]
    """pysyncobj's meta file (term, vote, commit index), stored atomically and synced."""

    def __init__(self, path: str, journal: SyncedJournal) -> None:
        super().__init__(path)
        self._journal = journal

    def storeMeta(self, meta: dict[str, Any]) -> None:
        data = dumps(meta)
        write_durably(self.getPath(), data)
        self._journal.meta_synced(data)


def _record(command: Any, idx: int, term: int) -> bytes:
    """One journal record in pysyncobj's format: size, index, term, command, size."""
    body: bytes = struct.pack("<QQ", idx, term) + to_bytes(command)
    size = struct.pack("<I", len(body))
    return size + body + size


class SyncedJournal(FileJournal):  # type: ignore[misc]
    """A FileJournal whose entries count as stored only once `sync()` has returned."""

    # FileJournal's private state, reached by its mangled names (pysyncobj is pinned).
    _FileJournal__journal: list[tuple[Any, int, int]]
    _FileJournal__journalFile: Any
    _FileJournal__currentOffset: int

    def __init__(self, path: str, trace: bool = False) -> None:
        super().__init__(path)
        self._path = path
        self._trace = trace
        self._dirty = False
        self._synced_meta: bytes | None = None
        self.syncs = 0
        self.synced_index = self._last_index()
        self._check_chain()
        self._FileJournal__metaStorer = _SyncedMeta(path + ".meta", self)
        if trace:
            meta = Path(path + ".meta")
            self._synced_meta = meta.read_bytes() if meta.exists() else None
            self._record_synced()

    def _check_chain(self) -> None:
        entries = self._FileJournal__journal
        header = self._FileJournal__journalFile.read(LAST_RECORD_OFFSET_OFFSET, 4)
        end = struct.unpack("<I", header)[0]
        records_end = self._FileJournal__currentOffset
        if records_end != end:
            raise CorruptJournal(f"{self._path}: records end at {records_end}, header says {end}")
        for previous, entry in itertools.pairwise(entries):
            if entry[1] != previous[1] + 1 or entry[2] < previous[2]:
                raise CorruptJournal(f"{self._path}: entry {entry[1]} (term {entry[2]}) follows "
                                     f"{previous[1]} (term {previous[2]})")

    @property
    def dirty(self) -> bool:
        """Whether entries were written or removed since the last sync."""
        return self._dirty

    def add(self, command: Any, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        super().clear()
        self._dirty = True
        self.synced_index = 0

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True
        self.synced_index = min(self.synced_index, self._last_index())

    def _last_index(self) -> int:
        return self._FileJournal__journal[-1][1] if self._FileJournal__journal else 0

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the entries before `entryTo` (now in a snapshot): write a new file, rename it."""
        kept = self._FileJournal__journal[entryTo:]
        body = b"".join(_record(*entry) for entry in kept)
        end = FIRST_RECORD_OFFSET + len(body)
        header = self._FileJournal__getDefaultHeader()[:LAST_RECORD_OFFSET_OFFSET]
        self._FileJournal__journalFile._destroy()
        write_durably(self._path, header + struct.pack("<I", end) + body)
        self._FileJournal__journalFile = ResizableFile(self._path)
        self._FileJournal__journal = list(kept)
        self._FileJournal__currentOffset = end
        self._dirty = False
        self.syncs += 1
        self.synced_index = self._last_index()
        self._record_synced()

    def sync(self) -> bool:
        """Make every entry written so far durable with one msync; False if there was none."""
        if not self._dirty:
            return False
        self.flush()
        self._dirty = False
        self.syncs += 1
        self.synced_index = self._last_index()
        self._record_synced()
        return True

    def reset_empty(self, first_entry: tuple[bytes, int, int]) -> None:
        """Forget every entry (the node rebuilds from its peers) and keep only `first_entry`."""
        self.clear()
        self.add(*first_entry)
        self.sync()

    def meta_synced(self, data: bytes) -> None:
        """Called once a new meta file is durable."""
        self._synced_meta = data
        self._record_synced()

    def _record_synced(self) -> None:
        if not self._trace:
            return
        state = {"journal_end": self._FileJournal__currentOffset,
                 "meta": self._synced_meta.hex() if self._synced_meta is not None else None}
        sidecar = self._path + ".synced"
        with open(sidecar + ".tmp", "w", encoding="utf-8") as out:
            json.dump(state, out)
        os.replace(sidecar + ".tmp", sidecar)


def open_journal(path: str, trace: bool, can_rebuild: bool) -> tuple[SyncedJournal, bool]:
    """Open the journal; an unreadable one is moved aside (peers rebuild it) or stops the node.

    Returns the journal and whether it was unreadable and starts empty.
    """
    try:
        return SyncedJournal(path, trace), False
    except Exception as exc:  # any parse failure means the file cannot be trusted
        if not can_rebuild:
            stop_unrecoverable(
                f"the Raft journal {path} is unreadable ({exc}) and this node has no peers to "
                "rebuild from: stopping. Restore it from a backup, or move it aside to start "
                "empty.")
        aside = move_aside(path)
        log.critical("the Raft journal %s is unreadable (%s): moved to %s; this node starts "
                     "with an empty log and rebuilds from its peers", path, exc, aside)
        return SyncedJournal(path, trace), True
