"""`/api/v1/users`: accounts and their roles (admins), and each user's own record."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request, Response

from mes.api.account_schemas import UserCreate, UserOut, UserUpdate
from mes.api.auth import Admin, Caller, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.errors import ApiError
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, page_by_id
from mes.app.ports import Farm
from mes.auth.secrets import hash_password
from mes.state import listing
from mes.state.ops import Op
from mes.state.users import get_user

router = authenticated_router("/users", "users")


async def _shown(node: Farm, user_id: str) -> dict[str, Any]:
    return found(await read(node, lambda c: listing.user_by_id(c, user_id)), "user", user_id)


def _public(value: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in value.items() if k != "password_hash"}
    shown["has_password"] = value.get("password_hash") is not None
    return shown


@router.get("", response_model=list[UserOut])
async def list_users(request: Request, response: Response, node: NodeDep, _: Admin,
                     limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """Users by id, one page at a time (admins)."""
    return await page_by_id(request, response, node, listing.users_page, limit, cursor)


@router.post("", status_code=201, response_model=UserOut)
async def create_user(body: UserCreate, node: NodeDep, who: Admin,
                      idempotency_key: IdempotencyKey = None) -> Any:
    """Add a user with a role (admins). A password is optional: tokens need none."""
    args = body.model_dump(exclude_none=True, exclude={"password"})
    args.setdefault("id", new_id(idempotency_key, who))
    if body.password is not None:
        args["password_hash"] = await asyncio.to_thread(hash_password, body.password)
    return _public(await commit(node, Op.USER_CREATE, args, idempotency_key, who))


@router.get("/me", response_model=UserOut)
async def me(node: NodeDep, who: Caller) -> Any:
    """The caller's own account."""
    return await _shown(node, who.user_id)


@router.get("/{user_id}", response_model=UserOut)
async def get_one(user_id: str, node: NodeDep, who: Caller) -> Any:
    """One user (admins: anyone; others: themselves)."""
    if user_id != who.user_id and not who.at_least("admin"):
        raise ApiError(403, "forbidden", "only admins see other users")
    return await _shown(node, user_id)


@router.patch("/{user_id}", response_model=UserOut)
async def update_user(user_id: str, body: UserUpdate, node: NodeDep, who: Caller,
                      idempotency_key: IdempotencyKey = None) -> Any:
    """Change a user. Admins change anything (the last admin stays an admin); others
    change their own name, e-mail and password. Disabling a user stops all their tokens; a
    new password ends the user's web sessions (but the one that set it)."""
    changes = body.model_dump(exclude_unset=True, exclude={"password"})
    if not who.at_least("admin"):
        if user_id != who.user_id:
            raise ApiError(403, "forbidden", "only admins change other users")
        for name in ("role", "disabled"):
            if changes.get(name) is not None:
                current = await read(node, lambda c: get_user(c, user_id))
                if current is None or current[name] != changes[name]:
                    raise ApiError(403, "forbidden", f"only admins change {name}", name)
    args: dict[str, Any] = {"id": user_id, **{k: v for k, v in changes.items() if v is not None
                                              or k == "email"}}
    if body.password is not None:
        args["password_hash"] = await asyncio.to_thread(hash_password, body.password)
        if who.user_id == user_id and who.token_id:
            # A new password ends the user's web sessions, but not the one that set it.
            args["keep_token"] = who.token_id
    return _public(await commit(node, Op.USER_UPDATE, args, idempotency_key, who))
