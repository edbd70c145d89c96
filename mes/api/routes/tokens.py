"""`/api/v1/tokens`: API tokens, shown once at creation, listed and revoked by their owner
or an admin."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Query, Request, Response

from mes.api.account_schemas import TokenCreate, TokenCreatedOut, TokenOut
from mes.api.auth import Caller, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.errors import ApiError
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, paged
from mes.app import quotas
from mes.auth.secrets import new_token, token_hash
from mes.state import listing
from mes.state.ops import Op
from mes.state.users import get_token

router = authenticated_router("/tokens", "tokens")


def _record(token: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in token.items() if k != "token_hash"}


@router.post("", status_code=201, response_model=TokenCreatedOut)
async def create_token(body: TokenCreate, node: NodeDep, who: Caller,
                       idempotency_key: IdempotencyKey = None) -> Any:
    """Make an API token for yourself (admins: for any user). The answer's `token` is
    shown only this once; only its SHA-256 is stored."""
    owner = body.user_id or who.user_id
    if owner != who.user_id and not who.at_least("admin"):
        raise ApiError(403, "forbidden", "only admins make tokens for other users", "user_id")
    token = new_token()
    args: dict[str, Any] = {"id": new_id(idempotency_key, who), "user_id": owner,
                            "name": body.name, "token_hash": token_hash(token)}
    if body.expires_in_seconds is not None:
        args["expires_at"] = time.time() + body.expires_in_seconds
    value = await commit(node, Op.TOKEN_CREATE, args, idempotency_key, who,
                         quotas.token_quota(node.settings.quotas))
    if value["token_hash"] != args["token_hash"]:
        raise ApiError(409, "token_already_shown", "this Idempotency-Key already made a token, "
                       "whose value was shown once; revoke it if it was lost and make another")
    return {**_record(value), "token": token}


@router.get("", response_model=list[TokenOut])
async def list_tokens(
    request: Request, response: Response, node: NodeDep, who: Caller,
    user_id: Annotated[str | None, Query(max_length=64,
                                         description="admins: this user's tokens")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Any:
    """Your tokens (admins: everyone's, or `user_id`'s), oldest first; never their values."""
    if not who.at_least("admin"):
        if user_id not in (None, who.user_id):
            raise ApiError(403, "forbidden", "only admins list other users' tokens", "user_id")
        user_id = who.user_id
    after = decode_cursor(cursor, float, str)
    rows = await read(node, lambda c: listing.tokens_page(c, user_id, after, limit + 1))
    return paged(request, response, rows, limit, lambda r: [r["created_at"], r["id"]])


@router.get("/{token_id}", response_model=TokenOut)
async def get_one(token_id: str, node: NodeDep, who: Caller) -> Any:
    """One token's record (yours; admins: anyone's)."""
    token = await read(node, lambda c: get_token(c, token_id))
    if token is not None and token["user_id"] != who.user_id and not who.at_least("admin"):
        token = None
    return _record(found(token, "token", token_id))


@router.delete("/{token_id}", response_model=TokenOut)
async def revoke(token_id: str, node: NodeDep, who: Caller,
                 idempotency_key: IdempotencyKey = None) -> Any:
    """Revoke a token (yours; admins: anyone's). It stops working on every node as soon as
    that node applies the revocation."""
    await get_one(token_id, node, who)
    return _record(await commit(node, Op.TOKEN_REVOKE, {"id": token_id}, idempotency_key, who))
