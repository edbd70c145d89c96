"""Backups of a running farm and the restore that seeds a new node from one.

A backup is a tar: `backup.json` (who wrote it, the Raft index and schema of the image, the
files it names), `state.sqlite` (the state machine's image, taken between two applies) and
`blobs/<sha256>` for every G-code file the image names. `restore` writes that image as the
node's snapshot at the same Raft index, with a log of no-ops of term 0 before it: every node
of a new cluster seeded from the same backup holds the same log and state, and any of them
may lead. The image is migrated when the node loads it, as any snapshot is.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sqlite3
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pysyncobj.syncobj
from pysyncobj.node import TCPNode

from mes.files.store import SHA256_PATTERN, BlobStore
from mes.raft.journal import write_durably
from mes.raft.snapshot import FORMAT, refuse_newer
from mes.version import DATA_LEVEL, RELEASE, SCHEMA, SCHEMA_MIN_READER

MANIFEST = "backup.json"
IMAGE = "state.sqlite"
KIND = "mes-backup-1"
_NO_OP = pysyncobj.syncobj._bchr(pysyncobj.syncobj._COMMAND_TYPE.NO_OP)


class BackupError(Exception):
    """The file is not a usable backup, or the data directory is not empty."""


def files_named(image: bytes) -> list[str]:
    """The SHA-256 of every G-code file the image names."""
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(image)
        return sorted(row[0] for row in db.execute("SELECT id FROM files")
                      if isinstance(row[0], str) and SHA256_PATTERN.match(row[0]))
    finally:
        db.close()


def manifest(index: int, image: bytes, files: list[str]) -> dict[str, Any]:
    """What a backup says of itself."""
    return {"kind": KIND, "release": RELEASE, "level": DATA_LEVEL, "schema": SCHEMA,
            "min_reader": SCHEMA_MIN_READER, "raft_index": index, "created_at": time.time(),
            "image_sha256": hashlib.sha256(image).hexdigest(), "files": files}


def write_backup(out: IO[bytes], index: int, image: bytes, blobs: BlobStore) -> dict[str, Any]:
    """Write a backup of `image` (applied at Raft `index`) and its files to `out`.

    A file the image names but this node lacks is left out and listed as missing.
    """
    named = files_named(image)
    present = [sha for sha in named if blobs.has(sha)]
    info = manifest(index, image, present)
    info["missing_files"] = sorted(set(named) - set(present))
    with tarfile.open(fileobj=out, mode="w|") as tar:
        _add_bytes(tar, MANIFEST, json.dumps(info, indent=1).encode())
        _add_bytes(tar, IMAGE, image)
        for sha in present:
            tar.add(str(blobs.path(sha)), arcname=f"blobs/{sha}", recursive=False)
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    entry = tarfile.TarInfo(name)
    entry.size = len(data)
    entry.mtime = int(time.time())
    entry.mode = 0o600
    tar.addfile(entry, io.BytesIO(data))


@dataclass
class Backup:
    """A backup read back: its manifest and image (blobs are stored as they are read)."""

    info: dict[str, Any]
    image: bytes


def read_backup(source: IO[bytes], blobs: BlobStore) -> Backup:
    """Read a backup, storing its blobs (each checked against its name) into `blobs`."""
    info: dict[str, Any] | None = None
    image: bytes | None = None
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for entry in tar:
                if not entry.isfile():
                    raise BackupError(f"unexpected entry {entry.name!r}")
                data = _read_entry(tar, entry)
                if entry.name == MANIFEST:
                    info = json.loads(data)
                    _check_manifest(info)
                elif entry.name == IMAGE:
                    image = data
                elif entry.name.startswith("blobs/"):
                    sha = entry.name.removeprefix("blobs/")
                    if not SHA256_PATTERN.match(sha):
                        raise BackupError(f"unexpected entry {entry.name!r}")
                    try:
                        blobs.put(data, expected_sha=sha)
                    except ValueError as exc:
                        raise BackupError(f"{entry.name} is damaged: {exc}") from None
                else:
                    raise BackupError(f"unexpected entry {entry.name!r}")
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise BackupError(f"not a readable backup: {exc}") from None
    if info is None or image is None:
        raise BackupError("not a mes backup: backup.json or state.sqlite is missing")
    if hashlib.sha256(image).hexdigest() != info.get("image_sha256"):
        raise BackupError("the state image does not match its checksum: the backup is damaged")
    return Backup(info, image)


def _read_entry(tar: tarfile.TarFile, entry: tarfile.TarInfo) -> bytes:
    member = tar.extractfile(entry)
    if member is None:
        raise BackupError(f"unreadable entry {entry.name!r}")
    return member.read()


def _check_manifest(info: Any) -> None:
    if not isinstance(info, dict) or info.get("kind") != KIND:
        raise BackupError("not a mes backup (backup.json names another kind)")
    index = info.get("raft_index")
    if not isinstance(index, int) or index < 2:
        raise BackupError("backup.json has no valid raft_index")
    refuse_newer(info, "the backup")  # NewerData: a newer release's backup


def seed_data_dir(data_dir: Path, backup: Backup, self_address: str,
                  peers: list[str]) -> Path:
    """Write the backup's image as this node's snapshot at the backup's Raft index.

    The data directory must hold no journal or snapshot yet (restore seeds new nodes only).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    snapshot = data_dir / "raft.snapshot"
    if any((data_dir / name).exists() for name in ("raft.journal", "raft.snapshot")):
        raise BackupError(f"{data_dir} already holds a Raft journal or snapshot: restore "
                          "seeds a new node only (use an empty DATA_DIR)")
    index = int(backup.info["raft_index"])
    # Term 0: every term a new cluster elects is higher, so the seeded log never looks more
    # up to date than what the new cluster commits after it.
    last, before_last = (_NO_OP, index, 0), (_NO_OP, index - 1, 0)
    cluster = {TCPNode(address) for address in (self_address, *peers)}
    payload = {"format": FORMAT, "db": backup.image, "raft": (last, before_last, cluster),
               "schema": backup.info.get("schema", 1),
               "min_reader": backup.info.get("min_reader", 1),
               "release": backup.info.get("release"), "level": backup.info.get("level")}
    write_durably(str(snapshot), pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL),
                  mode=0o600)
    return snapshot
