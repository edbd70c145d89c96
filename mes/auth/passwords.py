"""Signing in with a user name (or id) and password against the replicated users table."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection

from mes.auth.principal import Principal
from mes.auth.secrets import hash_password, password_matches
from mes.state.credentials import users_by_login

log = logging.getLogger(__name__)

MAX_NAME = 200
MAX_PASSWORD = 1024

Reader = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
PasswordCheck = Callable[[str, str], Awaitable[Principal | None]]


@functools.cache
def _decoy_hash() -> str:
    """A hash to verify against when the user does not exist (same time as a real one)."""
    return hash_password("no such user")


def find_user(conn: Connection, login: str) -> dict[str, Any] | None:
    """The one user whose name (any letter case) or id is `login`; None when there is none,
    or when it is one user's name and another's id (possible only in data from before
    level 4, which refuses such names): a sign-in never picks between two accounts."""
    rows = users_by_login(conn, login)
    if len({r["id"] for r in rows}) > 1:
        log.warning("sign-in as %r refused: it is the name or id of %d users (%s); rename "
                    "one", login[:MAX_NAME], len(rows), ", ".join(sorted(r["id"] for r in rows)))
        return None
    return rows[0] if rows else None


def verify(user: dict[str, Any] | None, password: str) -> Principal | None:
    """The user as a Principal if `password` is theirs and they may sign in (blocking)."""
    if user is None or not user["password_hash"]:
        password_matches(_decoy_hash(), password)
        return None
    if not password_matches(user["password_hash"], password) or user["disabled"]:
        return None
    return Principal(user["id"], user["name"], user["role"])
