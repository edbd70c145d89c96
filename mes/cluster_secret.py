"""What CLUSTER_SECRET is turned into: one key per channel, never the secret itself.

The Raft transport (pysyncobj's `password`) and the internal blob routes each get their own
HMAC-SHA256 of the secret, so that neither channel's key reveals the other's.
"""

from __future__ import annotations

import hashlib
import hmac

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
