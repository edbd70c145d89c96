"""Printer groups: a group is the `group` its printers name; renaming one (or dissolving it)
changes every printer of the group in one command (group.rename, level 7)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand, NotFound
from mes.state.tables import printers

MAX_GROUP = 200


def rename(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Give every printer of `group` the group `to` (null: no group); the printers moved."""
    args.reject_unknown(("group", "to"))
    group = args.text("group", MAX_GROUP)
    to = args.text("to", MAX_GROUP, nullable=True)
    if not group.strip():
        raise InvalidCommand("empty_field", "group must not be empty", "group")
    if to is not None and not to.strip():
        raise InvalidCommand("empty_field", "to must not be empty (null: no group)", "to")
    if to == group:
        raise InvalidCommand("same_group", f"the group is already called {group!r}", "to")
    members = [row.id for row in ctx.conn.execute(
        select(printers.c.id).where(printers.c.group == group).order_by(printers.c.id))]
    if not members:
        raise NotFound("group_not_found", f"no printer is in group {group!r}", "group")
    ctx.conn.execute(update(printers).where(printers.c.group == group)
                     .values(group=to, updated_at=ctx.ts))
    for printer_id in members:
        ctx.changed("printer", printer_id, "updated")
    return {"group": group, "to": to, "printers": members}


def groups(conn: Any) -> list[dict[str, Any]]:
    """Every group with how many printers it has, by name."""
    query = (select(printers.c.group, func.count().label("printers"))
             .where(printers.c.group.is_not(None)).group_by(printers.c.group)
             .order_by(printers.c.group))
    return [{"group": row.group, "printers": row.printers} for row in conn.execute(query)]
