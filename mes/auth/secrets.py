"""API tokens and passwords: made and hashed at the edge, never stored in the clear."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Leaked tokens are easy to find (and to scan for) by this prefix.
TOKEN_PREFIX = "mes_"
TOKEN_BYTES = 32
_hasher = PasswordHasher()  # argon2id with the library's defaults


def new_token() -> str:
    """A fresh API token: the prefix and 32 random bytes, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The stored form of a token: its SHA-256 in hex (tokens have 256 bits of entropy,
    so a fast hash is enough; passwords get argon2id)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (about 0.2 s: call it off the event loop)."""
    return _hasher.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches the stored argon2id hash (False when there is none)."""
    if not stored_hash:
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
