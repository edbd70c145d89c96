"""Users and their API tokens: create, change, revoke, and the first admin.

Secrets arrive hashed (token SHA-256, password argon2id): apply stores what it is given and
never hashes, so every node stores the same bytes.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update

from mes.state.args import MISSING, Args, present
from mes.state.context import ApplyContext
from mes.state.errors import Forbidden, InvalidCommand, NotFound, RuleViolation
from mes.state.prepared import Prepared
from mes.state.tables import api_tokens, users

ROLES = ("user", "operator", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES, 1)}
TOKEN_HASH = re.compile(r"^[0-9a-f]{64}$")
PASSWORD_HASH = re.compile(r"^\$argon2id\$[\x21-\x7e]{10,240}$")
EMAIL = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]{1,255}$")
USER_FIELDS = ("name", "email", "role", "disabled", "password_hash")
# The name of the tokens that password sign-in makes (the web page's sessions).
SESSION_TOKEN_NAME = "web session"


_USER_BY_ID = Prepared(select(users).where(users.c.id == bindparam("id")))


def get_user(conn: Any, user_id: str) -> dict[str, Any] | None:
    """One user (with its password hash), or None."""
    row = _USER_BY_ID.run(conn, {"id": user_id}).first()
    return dict(row._mapping) if row else None


def _user(ctx: ApplyContext, user_id: str | None) -> dict[str, Any]:
    user = get_user(ctx.conn, user_id or "")
    if user is None:
        raise NotFound("user_not_found", f"user {user_id!r} does not exist", "id")
    return user


def enabled_admins(conn: Any) -> int:
    """How many admins can sign in."""
    count = conn.execute(select(func.count()).select_from(users).where(
        users.c.role == "admin", users.c.disabled.is_(False))).scalar_one()
    return int(count)


def _fields(args: Args, required: bool) -> dict[str, Any]:
    values = present(
        name=args.text("name", 200, required=required),
        email=args.pattern("email", EMAIL, "an e-mail address"),
        role=args.choice("role", ROLES, required=required),
        disabled=args.flag("disabled", required=False),
        password_hash=args.pattern("password_hash", PASSWORD_HASH, "an argon2id hash"),
    )
    if "name" in values and not values["name"].strip():
        raise InvalidCommand("empty_field", "name must not be empty", "name")
    return values


def _name_free(ctx: ApplyContext, name: str, user_id: str) -> None:
    taken = ctx.conn.execute(select(users.c.id).where(
        func.lower(users.c.name) == name.lower(), users.c.id != user_id)).first()
    if taken is not None:
        raise RuleViolation("name_taken", f"another user is named {name!r}", "name")


def _no_collision(ctx: ApplyContext, user_id: str, name: str | None) -> None:
    """Level 4: a user's name is no other user's id, and their id no other user's name (in
    any letter case), so a sign-in name can never mean two accounts."""
    if name is not None and ctx.conn.execute(select(users.c.id).where(
            func.lower(users.c.id) == name.lower(), users.c.id != user_id)).first():
        raise RuleViolation("name_taken", f"{name!r} is another user's id; choose another "
                            "name", "name")
    if name is None and ctx.conn.execute(select(users.c.id).where(
            func.lower(users.c.name) == user_id.lower())).first():
        raise RuleViolation("already_exists", f"{user_id!r} is another user's name; choose "
                            "another id", "id")


def _insert_user(ctx: ApplyContext, user_id: str, values: dict[str, Any]) -> None:
    if get_user(ctx.conn, user_id) is not None:
        raise RuleViolation("already_exists", f"user {user_id!r} already exists", "id")
    _name_free(ctx, values["name"], user_id)
    row = {"email": None, "disabled": False, "password_hash": None, "oidc_subject": None,
           **values, "id": user_id, "created_at": ctx.ts, "updated_at": ctx.ts}
    ctx.conn.execute(insert(users).values(**row))
    ctx.changed("user", user_id, "created")


def create(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Add a user (admins only)."""
    args.reject_unknown(("id", *USER_FIELDS))
    user_id = args.ident("id")
    assert user_id is not None
    _insert_user(ctx, user_id, _fields(args, required=True))
    return _user(ctx, user_id)


def create_distinct(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 4 of `create`: the new id is no user's name, the name no other user's id."""
    user_id, name = args.raw("id"), args.raw("name")
    if isinstance(user_id, str):
        _no_collision(ctx, user_id, None)
        if isinstance(name, str):
            _no_collision(ctx, user_id, name)
    return create(ctx, args)


def update_(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Change a user; users may change their own name, e-mail and password only.

    The last admin who can sign in cannot be demoted or disabled.
    """
    args.reject_unknown(("id", *USER_FIELDS))
    user = _user(ctx, args.ident("id"))
    values = _fields(args, required=False)
    if ctx.actor_role != "admin" and ctx.actor is not None:
        if ctx.actor != user["id"]:
            raise Forbidden("forbidden", "only an admin may change another user")
        for name in ("role", "disabled"):
            if name in values and values[name] != user[name]:
                raise Forbidden("forbidden", f"only an admin may change {name}", name)
    if "name" in values:
        _name_free(ctx, values["name"], user["id"])
    losing_admin = user["role"] == "admin" and not user["disabled"] and (
        values.get("role", "admin") != "admin" or values.get("disabled", False))
    if losing_admin and enabled_admins(ctx.conn) <= 1:
        raise RuleViolation("last_admin", "this is the last admin who can sign in; make "
                            "another admin first", "role")
    if values:
        ctx.conn.execute(update(users).where(users.c.id == user["id"])
                         .values(updated_at=ctx.ts, **values))
        ctx.changed("user", user["id"], "updated")
    return _user(ctx, user["id"])


def update_ending_sessions(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """user.update of level 3: as before, and a new password ends the user's web sessions
    (tokens named SESSION_TOKEN_NAME), all but `keep_token` (the session that changed it)."""
    keep = args.ident("keep_token", required=False)
    plain = args.without("keep_token")
    before = _user(ctx, plain.ident("id"))
    changed = update_(ctx, plain)
    if plain.has("password_hash") and plain.raw("password_hash") != before["password_hash"]:
        sessions = select(api_tokens.c.id).where(
            api_tokens.c.user_id == changed["id"], api_tokens.c.name == SESSION_TOKEN_NAME,
            api_tokens.c.revoked_at.is_(None)).order_by(api_tokens.c.id)
        for (token_id,) in ctx.conn.execute(sessions).all():
            if token_id != keep:
                ctx.conn.execute(update(api_tokens).where(api_tokens.c.id == token_id)
                                 .values(revoked_at=ctx.ts))
                ctx.changed("api_token", token_id, "updated")
    return changed


def update_distinct(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 4 of `update`: as level 3, and a new name is no other user's id."""
    user_id, name = args.raw("id"), args.raw("name")
    if isinstance(user_id, str) and isinstance(name, str):
        _no_collision(ctx, user_id, name)
    return update_ending_sessions(ctx, args)


def bootstrap(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Create the first admin and its token, unless an admin who can sign in exists."""
    args.reject_unknown(("user_id", "name", "token_id", "token_name", "token_hash"))
    user_id = args.ident("user_id")
    token_id = args.ident("token_id")
    name = args.text("name", 200)
    token_name = args.text("token_name", 200)
    token_hash = args.pattern("token_hash", TOKEN_HASH, "a SHA-256 in hex", nullable=False)
    assert user_id and token_id
    if enabled_admins(ctx.conn) > 0:
        return {"created": False}
    if get_user(ctx.conn, user_id) is None:
        _insert_user(ctx, user_id, {"name": name, "role": "admin"})
    else:
        ctx.conn.execute(update(users).where(users.c.id == user_id)
                         .values(role="admin", disabled=False, updated_at=ctx.ts))
        ctx.changed("user", user_id, "updated")
    _insert_token(ctx, {"id": token_id, "user_id": user_id, "name": token_name,
                        "token_hash": token_hash, "expires_at": None})
    return {"created": True, "user_id": user_id, "token_id": token_id}


def oidc_login(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The user of an OpenID Connect subject: created on first sight, kept in step after.

    A role given (from the provider's claim) replaces the stored one; without one a new
    user gets `user` and an existing one keeps theirs.
    """
    args.reject_unknown(("id", "subject", "name", "email", "role"))
    subject = args.text("subject", 300)
    role = args.choice("role", ROLES, required=False, nullable=True)
    name = args.text("name", 200)
    email = args.pattern("email", EMAIL, "an e-mail address")
    row = ctx.conn.execute(select(users).where(users.c.oidc_subject == subject)).first()
    if row is None:
        user_id = args.ident("id")
        assert user_id is not None
        unique_name = name if ctx.conn.execute(select(users.c.id).where(
            func.lower(users.c.name) == name.lower())).first() is None else user_id
        _insert_user(ctx, user_id, {"name": unique_name, "role": role or "user",
                                    "email": None if email is MISSING else email,
                                    "oidc_subject": subject})
        return _user(ctx, user_id)
    user = dict(row._mapping)
    if role not in (None, user["role"]) and not (
            user["role"] == "admin" and enabled_admins(ctx.conn) <= 1):
        ctx.conn.execute(update(users).where(users.c.id == user["id"])
                         .values(role=role, updated_at=ctx.ts))
        ctx.changed("user", user["id"], "updated")
    return _user(ctx, user["id"])



def _insert_token(ctx: ApplyContext, values: dict[str, Any]) -> None:
    if ctx.conn.execute(select(api_tokens.c.id).where(
            (api_tokens.c.id == values["id"])
            | (api_tokens.c.token_hash == values["token_hash"]))).first() is not None:
        raise RuleViolation("already_exists", "this token already exists", "id")
    ctx.conn.execute(insert(api_tokens).values(created_at=ctx.ts, last_used_at=None,
                                               revoked_at=None, **values))
    ctx.changed("api_token", values["id"], "created")


def get_token(conn: Any, token_id: str) -> dict[str, Any] | None:
    """One token's record (its hash included), or None."""
    row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    return dict(row._mapping) if row else None


def create_token(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Record a token's hash for a user; users make tokens for themselves only."""
    args.reject_unknown(("id", "user_id", "name", "token_hash", "expires_at"))
    token_id = args.ident("id")
    owner = _user(ctx, args.ident("user_id"))
    if ctx.actor is not None and ctx.actor_role != "admin" and ctx.actor != owner["id"]:
        raise Forbidden("forbidden", "only an admin may make a token for another user")
    name = args.text("name", 200)
    token_hash = args.pattern("token_hash", TOKEN_HASH, "a SHA-256 in hex", nullable=False)
    expires = args.number("expires_at", 0, 1e11, required=False, nullable=True)
    if isinstance(expires, float) and expires <= ctx.ts:
        raise InvalidCommand("expired", "expires_at is in the past", "expires_at")
    assert token_id is not None
    _insert_token(ctx, {"id": token_id, "user_id": owner["id"], "name": name,
                        "token_hash": token_hash,
                        "expires_at": expires if isinstance(expires, float) else None})
    token = get_token(ctx.conn, token_id)
    assert token is not None
    return token


def revoke_token(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Revoke a token (its owner or an admin); revoking twice keeps the first time."""
    args.reject_unknown(("id",))
    token_id = args.ident("id")
    token = get_token(ctx.conn, token_id or "")
    if token is None or (ctx.actor is not None and ctx.actor_role != "admin"
                         and token["user_id"] != ctx.actor):
        raise NotFound("token_not_found", f"token {token_id!r} does not exist", "id")
    if token["revoked_at"] is None:
        ctx.conn.execute(update(api_tokens).where(api_tokens.c.id == token["id"])
                         .values(revoked_at=ctx.ts))
        ctx.changed("api_token", token["id"], "updated")
    changed = get_token(ctx.conn, token["id"])
    assert changed is not None
    return changed


def token_used(ctx: ApplyContext, args: Args) -> None:
    """Record when a token was last used (throttled by the nodes; later times only)."""
    args.reject_unknown(("id", "at"))
    token_id = args.ident("id")
    at = args.number("at", 0, 1e11)
    ctx.conn.execute(update(api_tokens).where(
        api_tokens.c.id == token_id,
        (api_tokens.c.last_used_at.is_(None)) | (api_tokens.c.last_used_at < at))
        .values(last_used_at=at))
