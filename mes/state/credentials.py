"""The reads that sign-in makes: the users a name or id names, the user of an OpenID Connect
subject, and the token (with its user) a bearer token's SHA-256 names."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, or_, select

from mes.state.tables import api_tokens, users

# Built once: a lookup per request that the node's token cache missed.
_TOKEN_BY_HASH = (select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.expires_at,
                         api_tokens.c.revoked_at, users.c.name, users.c.role, users.c.disabled)
                  .join(users, users.c.id == api_tokens.c.user_id))


def users_by_login(conn: Connection, login: str) -> list[dict[str, Any]]:
    """Every user whose name (any letter case) or id is `login`, with its password hash."""
    rows = conn.execute(select(users).where(or_(
        func.lower(users.c.name) == login.lower(), users.c.id == login))).all()
    return [dict(r._mapping) for r in rows]


def token_by_hash(conn: Connection, digest: str) -> dict[str, Any] | None:
    """The token with SHA-256 `digest` and its user's name, role and `disabled`, or None."""
    row = conn.execute(_TOKEN_BY_HASH.where(api_tokens.c.token_hash == digest)).first()
    return dict(row._mapping) if row else None


def user_by_oidc_subject(conn: Connection, subject: str) -> dict[str, Any] | None:
    """The id, name, role and `disabled` of the user of an OpenID Connect subject, or None."""
    row = conn.execute(select(users.c.id, users.c.name, users.c.role, users.c.disabled)
                       .where(users.c.oidc_subject == subject[:300])).first()
    return dict(row._mapping) if row else None
