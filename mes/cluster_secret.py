"""What CLUSTER_SECRET is turned into: one key per channel, never the secret itself.

The Raft transport (pysyncobj's `password`) and the internal blob routes each get their own
HMAC-SHA256 of the secret, so that neither channel's key reveals the other's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from mes.raft.journal import write_durably

RAFT_LABEL = b"mes-raft"
BLOBS_LABEL = b"mes-internal-blobs"


def _derive(secret: str, label: bytes) -> str:
    return hmac.new(secret.encode(), label, hashlib.sha256).hexdigest()


def raft_password(secret: str) -> str | None:
    """pysyncobj's transport password for `secret`; None (no encryption) without one."""
    return _derive(secret, RAFT_LABEL) if secret else None


def blob_token(secret: str) -> str | None:
    """The bearer token nodes send to each other's internal blob routes; None without a secret."""
    return _derive(secret, BLOBS_LABEL) if secret else None


def bearer_matches(authorization: str | None, secret: str) -> bool:
    """Whether an `Authorization` header carries this cluster's blob token.

    Always False without a secret: then no caller is a node of this cluster.
    """
    expected = blob_token(secret)
    if expected is None or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


# A node started without CLUSTER_SECRET (a single node) authenticates its Raft port with a
# secret of its own, generated once into DATA_DIR: nothing reaching that port is unpickled
# unless it carries the key, and only this node has it.
INSTALL_SECRET_FILE = "raft.key"


def install_secret(data_dir: Path) -> str:
    """This install's own secret (DATA_DIR/raft.key, mode 0600), created on first use."""
    path = data_dir / INSTALL_SECRET_FILE
    try:
        secret = path.read_text(encoding="ascii").strip()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    write_durably(str(path), (secret + "\n").encode("ascii"), mode=0o600)
    return secret


def raft_secret(cluster_secret: str, data_dir: Path) -> str:
    """The secret the Raft transport is keyed with: CLUSTER_SECRET, or this install's own."""
    return cluster_secret or install_secret(data_dir)
