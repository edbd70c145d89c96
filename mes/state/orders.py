"""Orders: one or more jobs submitted together by one user (the original MES server's ERD)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from mes.state import jobs
from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import DomainError, InvalidCommand, RuleViolation
from mes.state.tables import orders, print_jobs

MAX_ORDER_JOBS = 100


def create_owned(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 4 of `create`: each job as `jobs.create_owned`."""
    return create(ctx, args, owned_files=True)


def create_named(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 7 of `create`: each job as `jobs.create_named`."""
    return create(ctx, args, owned_files=True, own_names=True)


def create(ctx: ApplyContext, args: Args, owned_files: bool = False,
           own_names: bool = False) -> dict[str, Any]:
    """Create an order and all its jobs, or nothing: one job refused refuses the order."""
    args.reject_unknown(("id", "name", "owner_id", "jobs", "needs_approval"))
    order_id = args.ident("id")
    owner_id = args.ident("owner_id", required=False) or ctx.actor
    name = args.text("name", 200, required=False)
    needs_approval = args.flag("needs_approval", required=False) is True
    items = args.raw("jobs")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ORDER_JOBS:
        raise InvalidCommand("invalid_jobs", f"jobs must be a list of 1 to {MAX_ORDER_JOBS} "
                             "jobs", "jobs")
    if owner_id is None:
        raise InvalidCommand("missing_field", "an order needs an owner", "owner_id")
    assert order_id is not None
    if ctx.conn.execute(select(orders.c.id).where(orders.c.id == order_id)).first():
        raise RuleViolation("already_exists", f"order {order_id!r} already exists", "id")
    ctx.conn.execute(insert(orders).values(id=order_id, owner_id=owner_id,
                                           name=name if isinstance(name, str) else "",
                                           created_at=ctx.ts))
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidCommand("invalid_jobs", f"jobs[{index}] must be an object", "jobs")
        try:
            jobs.create_in(ctx, Args({**item, "owner_id": owner_id,
                                      "needs_approval": needs_approval}), order_id,
                           owned_files, own_names)
        except DomainError as exc:
            exc.message = f"jobs[{index}]: {exc.message}"
            exc.field = f"jobs.{index}.{exc.field}" if exc.field else "jobs"
            raise
    ctx.changed("order", order_id, "created")
    order = get_order(ctx.conn, order_id)
    assert order is not None
    return order


def order_status(statuses: list[str]) -> str:
    """An order's status from its jobs': Running while any runs, Queued while any waits,
    then Done if any finished, else Canceled."""
    for status in ("Running", "Queued", "Done"):
        if status in statuses:
            return status
    return "Canceled"


def get_order(conn: Any, order_id: str) -> dict[str, Any] | None:
    """One order with its jobs' ids and statuses, and its own status, or None."""
    row = conn.execute(select(orders).where(orders.c.id == order_id)).first()
    if row is None:
        return None
    return with_jobs(conn, [dict(row._mapping)])[0]


def with_jobs(conn: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Orders with their jobs (id, status) and the status that follows from them."""
    ids = [r["id"] for r in rows]
    by_order: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        query = (select(print_jobs.c.order_id, print_jobs.c.id, print_jobs.c.status)
                 .where(print_jobs.c.order_id.in_(ids))
                 .order_by(print_jobs.c.created_at, print_jobs.c.id))
        for job in conn.execute(query):
            by_order[job.order_id].append({"id": job.id, "status": job.status})
    result = []
    for row in rows:
        items = by_order[row["id"]]
        counts: dict[str, int] = {}
        for item in items:
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        result.append({**row, "status": order_status([i["status"] for i in items]),
                       "job_counts": counts, "jobs": items})
    return result
