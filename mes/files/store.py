"""Content-addressed blob storage under UPLOAD_PATH (SHA-256 names)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from mes.state.args import SHA256_PATTERN

__all__ = ["SHA256_PATTERN", "BlobStore"]

# How much of a blob's start is kept for checking its kind (text or binary G-code).
HEAD_BYTES = 64 * 1024


class BlobStore:
    """Blobs named by their SHA-256, written atomically, never changed once stored."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Blobs stored by this object so far (a metric rescans the store when it changes).
        self.stored = 0

    def path(self, sha: str) -> Path:
        """Where the blob `sha` lives (whether or not it is there)."""
        if not SHA256_PATTERN.match(sha):
            raise ValueError(f"{sha!r} is not a SHA-256")
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        """Whether this node holds the blob."""
        return SHA256_PATTERN.match(sha) is not None and self.path(sha).is_file()

    def put(self, data: bytes, expected_sha: str | None = None) -> str:
        """Store `data` and return its SHA-256; refuse it if it does not match `expected_sha`."""
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha is not None and sha != expected_sha:
            raise ValueError(f"content hashes to {sha}, not {expected_sha}")
        target = self.path(sha)
        if target.is_file():
            _touch(target)
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.stored += 1
        return sha

    def incoming(self, expected_sha: str | None = None) -> IncomingBlob:
        """A blob written piece by piece (never whole in memory), kept by `commit()`."""
        return IncomingBlob(self, expected_sha)

    def read(self, sha: str) -> bytes:
        """The blob's bytes; FileNotFoundError if this node lacks it."""
        return self.path(sha).read_bytes()


def _touch(path: Path) -> None:
    """Mark a blob stored again now, so that the sweep of unreferenced blobs spares it."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


class IncomingBlob:
    """A blob being received: hashed and written to a temporary file as pieces arrive.

    Use as a context manager; leaving it without `commit()` deletes what was written.
    """

    def __init__(self, store: BlobStore, expected_sha: str | None) -> None:
        self._store = store
        self._expected = expected_sha
        self._hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self._tmp: Path | None = None
        self._out: BinaryIO | None = None

    def __enter__(self) -> IncomingBlob:
        self._store.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._store.root, prefix=".incoming-")
        self._tmp = Path(tmp)
        self._out = os.fdopen(fd, "wb")
        return self

    def write(self, piece: bytes) -> None:
        """Add the next piece (blocking file I/O: call it from a worker thread)."""
        assert self._out is not None, "use IncomingBlob as a context manager"
        if len(self.head) < HEAD_BYTES:
            self.head += piece[: HEAD_BYTES - len(self.head)]
        self._hash.update(piece)
        self._out.write(piece)
        self.size += len(piece)

    def commit(self) -> str:
        """Sync and keep the blob under its SHA-256; ValueError if it is not the expected one."""
        assert self._out is not None and self._tmp is not None
        sha = self._hash.hexdigest()
        if self._expected is not None and sha != self._expected:
            raise ValueError(f"content hashes to {sha}, not {self._expected}")
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        target = self._store.path(sha)
        if target.is_file():
            _touch(target)
            self._tmp.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, target)
            self._store.stored += 1
        self._tmp = None
        return sha

    def __exit__(self, *exc_info: object) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
