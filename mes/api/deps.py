"""Dependencies of the routers: the node, reads, and committing a command."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from sqlalchemy import Connection

from mes import quotas
from mes.api.errors import ApiError, from_domain
from mes.api.raft_index import note_index
from mes.auth.principal import Principal
from mes.node import FarmNode
from mes.raft.writer import NoLeader
from mes.state.machine import was_applied

T = TypeVar("T")


async def get_node(request: Request) -> FarmNode:
    """The node this app serves."""
    node: FarmNode = request.app.state.node
    return node


NodeDep = Annotated[FarmNode, Depends(get_node)]
IdempotencyKey = Annotated[
    str | None,
    Header(max_length=100, pattern=r"^[\x21-\x7e]+$",
           description="retrying a write with the same key applies it at most once"),
]


def new_id(idempotency_key: str | None = None, by: Principal | None = None) -> str:
    """An id for an entity whose creator did not choose one.

    With an Idempotency-Key the id is derived from it and the caller, so a retried create
    names the same entity (and is recognised as the same request).
    """
    if idempotency_key:
        scope = f"{by.user_id}:" if by is not None else ""
        return hashlib.sha256(f"{scope}{idempotency_key}".encode()).hexdigest()[:16]
    return uuid.uuid4().hex[:16]


async def read(node: FarmNode, query: Callable[[Connection], T]) -> T:
    """Read this node's applied state on a worker thread, off the event loop.

    Reads have their own database connections: they never wait for apply (the Raft
    thread) nor make it wait, and a long one does not hold up other requests.
    """
    return await node.read(query)


def found(value: T | None, what: str, ident: str) -> T:
    """`value`, or a 404 naming the missing entity."""
    if value is None:
        label = what.replace("_", " ")
        raise ApiError(404, f"{what}_not_found", f"{label} {ident!r} does not exist")
    return value


async def _within(node: FarmNode, quota: quotas.Check, user_id: str, request_id: str) -> None:
    """Raise 429 `quota_exceeded` if the user reached `quota` and the request is new."""
    def query(conn: Connection) -> str | None:
        if was_applied(conn, request_id):
            return None  # a retry: its stored outcome answers it
        return quota(conn, user_id)

    message = await read(node, query)
    if message is not None:
        raise ApiError(429, "quota_exceeded", message)


async def commit(node: FarmNode, op: str, args: dict[str, Any], key: str | None,
                 by: Principal | None, quota: quotas.Check | None = None) -> Any:
    """Replicate a command on behalf of `by` and return its value once applied here, or
    raise an ApiError.

    A write without an `Idempotency-Key` gets one here, so that a 503 (outcome unknown) can
    tell the client which key makes its retry safe. `quota`: a per-user quota a `user`'s
    request must stay within (429 `quota_exceeded`), unless it was already applied.
    """
    key = key or uuid.uuid4().hex
    # A key names one request of one user: the same key on another target, or from another
    # user, is another request (and never answers with someone else's outcome).
    target = "" if op.endswith(".create") else f":{args.get('id', '')}"
    actor = by.user_id if by is not None else None
    request_id = f"{op}{target}:{actor or ''}:{key}"
    if quota is not None and by is not None and not by.staff:
        await _within(node, quota, by.user_id, request_id)
    try:
        outcome = await node.writer.submit(op, args, request_id, actor=actor)
    except NoLeader as exc:
        message = (f"outcome unknown: {exc}; the write may still be applied. Retry with the "
                   f"header 'Idempotency-Key: {key}' so that it applies at most once")
        raise ApiError(503, "no_leader", message,
                       headers={"Retry-After": "1", "Idempotency-Key": key}) from None
    note_index(outcome.index)
    if outcome.error is not None:
        if outcome.error.get("code") == "idempotency_key_reused":
            raise ApiError(422, "idempotency_key_reused", f"Idempotency-Key {key!r} was already "
                           "used for a different request; use a new key for a new request",
                           "idempotency-key")
        raise from_domain(outcome.error)
    return outcome.value
