"""File records: a G-code blob that a majority of nodes holds, by SHA-256."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update

from mes.state import queries
from mes.state.args import MISSING, SHA256_PATTERN, Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand
from mes.state.tables import file_owners, files, nodes

MAX_FILE_BYTES = 10 * 2**30


def register(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Record a stored file; registering the same content again returns the first record."""
    args.reject_unknown(("id", "name", "size"))
    file_id = args.pattern("id", SHA256_PATTERN, "a SHA-256", nullable=False)
    name = args.text("name", 255)
    size = args.integer("size", 1, MAX_FILE_BYTES)
    if file_id is MISSING:
        raise InvalidCommand("missing_field", "id is required", "id")
    existing = queries.get_file(ctx.conn, file_id)
    if existing is not None:
        return existing
    row = {"id": file_id, "name": name, "size": size, "created_at": ctx.ts}
    ctx.conn.execute(insert(files).values(**row))
    ctx.changed("file", file_id, "created")
    return row


def register_owned(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 4 of `register`: the uploader is recorded as one of the file's owners."""
    row = register(ctx, args)
    if ctx.actor is not None and not owns_file(ctx.conn, ctx.actor, row["id"]):
        ctx.conn.execute(insert(file_owners).values(file_id=row["id"], user_id=ctx.actor,
                                                    created_at=ctx.ts))
    return row


def register_named(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 7 of `register`: as level 4, and the uploader's own name for the file is kept,
    with the time: those of their latest upload of it; the answer carries that name."""
    row = register(ctx, args)
    if ctx.actor is None:
        return row
    name = args.text("name", 255)
    if owns_file(ctx.conn, ctx.actor, row["id"]):
        ctx.conn.execute(update(file_owners).where(
            file_owners.c.file_id == row["id"], file_owners.c.user_id == ctx.actor)
            .values(name=name, created_at=ctx.ts))
    else:
        ctx.conn.execute(insert(file_owners).values(file_id=row["id"], user_id=ctx.actor,
                                                    created_at=ctx.ts, name=name))
    return {**row, "name": name}


def name_for(conn: Any, user_id: str | None, file_id: str) -> str | None:
    """The name `user_id` gave the file at their latest upload (None: not recorded)."""
    if user_id is None:
        return None
    name: str | None = conn.execute(select(file_owners.c.name).where(
        file_owners.c.file_id == file_id, file_owners.c.user_id == user_id)).scalar()
    return name


def owns_file(conn: Any, user_id: str, file_id: str) -> bool:
    """Whether `user_id` uploaded the file `file_id` (recorded since level 4)."""
    return conn.execute(select(file_owners.c.user_id).where(
        file_owners.c.file_id == file_id, file_owners.c.user_id == user_id)).first() is not None


def may_use_file(conn: Any, user_id: str, file_id: str) -> bool:
    """Whether a user may print or download a file: they uploaded it, or a job of theirs
    prints it (uploads from before level 4 are known only so)."""
    return owns_file(conn, user_id, file_id) or queries.owns_job_with_file(conn, user_id,
                                                                          file_id)


def announce_node(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Record (or update) a node's HTTP address (format 1)."""
    args.reject_unknown(("raft_address", "http_url"))
    return _announce(ctx, args, {})


def announce_node_endpoints(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Record (or update) a node's HTTP address and its OPC UA endpoint, null when it runs
    no OPC UA server (format 6)."""
    args.reject_unknown(("raft_address", "http_url", "opcua_url"))
    opcua_url = args.text("opcua_url", 300, required=False, nullable=True)
    if opcua_url is not None and not opcua_url.startswith("opc.tcp://"):
        raise InvalidCommand("invalid_url", "opcua_url must be an opc.tcp:// URL", "opcua_url")
    return _announce(ctx, args, {"opcua_url": opcua_url})


def _announce(ctx: ApplyContext, args: Args, extra: dict[str, Any]) -> dict[str, Any]:
    raft_address = args.text("raft_address", 300)
    http_url = args.text("http_url", 300)
    if not http_url.startswith(("http://", "https://")):
        raise InvalidCommand("invalid_url", "http_url must be an http(s) URL", "http_url")
    known = {n["raft_address"]: n for n in queries.list_nodes(ctx.conn)}
    if raft_address in known:
        ctx.conn.execute(update(nodes).where(nodes.c.raft_address == raft_address)
                         .values(http_url=http_url, updated_at=ctx.ts, **extra))
    else:
        ctx.conn.execute(insert(nodes).values(raft_address=raft_address, http_url=http_url,
                                              updated_at=ctx.ts, **extra))
    return {"raft_address": raft_address, "http_url": http_url, **extra}


def forget_node(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Forget a node that left the cluster (its HTTP address is no longer a peer's)."""
    args.reject_unknown(("raft_address",))
    raft_address = args.text("raft_address", 300)
    gone = ctx.conn.execute(delete(nodes).where(nodes.c.raft_address == raft_address)).rowcount
    if gone:
        ctx.changed("node", raft_address, "deleted")
    return {"raft_address": raft_address, "forgotten": bool(gone)}
