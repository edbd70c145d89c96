"""Cutting power the way a test can: drop every byte of the journal that was never synced.

A node started with RAFT_SYNC_TRACE=1 records, after every sync, how far its journal
(`raft.journal`) is durable and the content of its last durable meta file, in
`raft.journal.synced`. After SIGKILL the page cache still holds everything written, so the
files are cut back to that record: the journal is truncated to the synced end (its header
says so too) and the meta file is put back to its synced content. That is what a power cut
that loses every unsynced write leaves; without the record nothing counts as synced.
Snapshots need no cut: they only ever replace the old one by a synced rename.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from pysyncobj.journal import FIRST_RECORD_OFFSET, LAST_RECORD_OFFSET_OFFSET


def cut_power_to_synced(data_dir: Path) -> int:
    """Cut the journal and meta file in `data_dir` back to their synced state; bytes dropped."""
    journal = data_dir / "raft.journal"
    if not journal.exists():
        return 0
    sidecar = data_dir / "raft.journal.synced"
    state = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    end = int(state.get("journal_end", FIRST_RECORD_OFFSET))
    meta_hex = state.get("meta")
    dropped = max(_journal_end(journal) - end, 0)
    with journal.open("r+b") as raw:
        raw.truncate(end)
        raw.seek(LAST_RECORD_OFFSET_OFFSET)
        raw.write(struct.pack("<I", end))
    meta = data_dir / "raft.journal.meta"
    if meta_hex is None:
        meta.unlink(missing_ok=True)
    else:
        meta.write_bytes(bytes.fromhex(meta_hex))
    for leftover in data_dir.glob("raft.*tmp"):
        os.remove(leftover)
    return dropped


def _journal_end(journal: Path) -> int:
    with journal.open("rb") as raw:
        raw.seek(LAST_RECORD_OFFSET_OFFSET)
        value: int = struct.unpack("<I", raw.read(4))[0]
        return value
