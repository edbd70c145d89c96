"""Content-addressed blob storage under UPLOAD_PATH (SHA-256 names)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Blobs named by their SHA-256, written atomically, never changed once stored."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

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
        return sha

    def read(self, sha: str) -> bytes:
        """The blob's bytes; FileNotFoundError if this node lacks it."""
        return self.path(sha).read_bytes()
