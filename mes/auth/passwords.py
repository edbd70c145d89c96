"""Signing in with a user name (or id) and password against the replicated users table."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection, func, or_, select

from mes.auth.principal import Principal
from mes.auth.secrets import hash_password, password_matches
from mes.state.tables import users

MAX_NAME = 200
MAX_PASSWORD = 1024

Reader = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
PasswordCheck = Callable[[str, str], Awaitable[Principal | None]]


@functools.cache
def _decoy_hash() -> str:
    """A hash to verify against when the user does not exist (same time as a real one)."""
    return hash_password("no such user")


def find_user(conn: Connection, login: str) -> dict[str, Any] | None:
    """The user whose name (any letter case) or id is `login`; the name wins."""
    rows = conn.execute(select(users).where(or_(
        func.lower(users.c.name) == login.lower(), users.c.id == login))).all()
    by_name = [r for r in rows if r.name.lower() == login.lower()]
    chosen = by_name or rows
    return dict(chosen[0]._mapping) if chosen else None


def verify(user: dict[str, Any] | None, password: str) -> Principal | None:
    """The user as a Principal if `password` is theirs and they may sign in (blocking)."""
    if user is None or not user["password_hash"]:
        password_matches(_decoy_hash(), password)
        return None
    if not password_matches(user["password_hash"], password) or user["disabled"]:
        return None
    return Principal(user["id"], user["name"], user["role"])
