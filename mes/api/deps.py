"""Dependencies of the routers: the node, reads, and committing a command."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from sqlalchemy import Connection

from mes.api.errors import ApiError
from mes.app import quotas
from mes.app.ports import Farm
from mes.auth.principal import Principal

T = TypeVar("T")


def node_of(request: Request) -> Farm:
    """The farm node this app serves (through the application layer's ports)."""
    node: Farm = request.app.state.node
    return node


async def get_node(request: Request) -> Farm:
    """The node, as a dependency of a route."""
    return node_of(request)


NodeDep = Annotated[Farm, Depends(get_node)]
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


async def read(node: Farm, query: Callable[[Connection], T]) -> T:
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


async def commit(node: Farm, op: str, args: dict[str, Any], key: str | None,
                 by: Principal | None, quota: quotas.Check | None = None) -> Any:
    """Submit a command through the node's command door (`mes.app.commands`) and return
    its value once applied here; its `DomainError` answers as HTTP (`mes.api.errors`)."""
    return await node.commands.submit(op, args, by, key, quota)
