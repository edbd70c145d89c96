"""`/api/v1/orders`: jobs submitted together; an order's status follows its jobs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Request, Response

from mes.api.account_schemas import OrderCreate, OrderOut
from mes.api.auth import Caller, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, paged
from mes.api.routes.print_jobs import needs_approval
from mes.app import quotas
from mes.state import listing
from mes.state.ops import Op
from mes.state.orders import get_order

router = authenticated_router("/orders", "orders")


@router.post("", status_code=201, response_model=OrderOut)
async def create_order(body: OrderCreate, node: NodeDep, who: Caller,
                       idempotency_key: IdempotencyKey = None) -> Any:
    """Submit one or more jobs together in your name: all are queued, or none is (the
    error names the job, e.g. `jobs.1.filament_id`)."""
    order_id = body.id or new_id(idempotency_key, who)
    jobs = []
    for index, job in enumerate(body.jobs):
        item = job.model_dump(exclude_none=True)
        item.setdefault("id", f"{order_id[:48]}-{index + 1}" if body.id is None
                        and idempotency_key else uuid.uuid4().hex[:16])
        jobs.append(item)
    args: dict[str, Any] = {"id": order_id, "owner_id": who.user_id, "jobs": jobs}
    if body.name is not None:
        args["name"] = body.name
    if needs_approval(node, who):
        args["needs_approval"] = True
    return await commit(node, Op.ORDER_CREATE, args, idempotency_key, who,
                        quotas.order_quota(node.settings.quotas, len(jobs)))


@router.get("", response_model=list[OrderOut])
async def list_orders(
    request: Request, response: Response, node: NodeDep, who: Caller,
    owner_id: Annotated[str | None, Query(max_length=64,
                                          description="operators and admins")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Any:
    """Orders oldest first (users: their own), each with its jobs and status."""
    if not who.staff:
        owner_id = who.user_id
    after = decode_cursor(cursor, float, str)
    rows = await read(node, lambda c: listing.orders_page(c, owner_id, after, limit + 1))
    return paged(request, response, rows, limit, lambda r: [r["created_at"], r["id"]])


@router.get("/{order_id}", response_model=OrderOut)
async def get_one(order_id: str, node: NodeDep, who: Caller) -> Any:
    """One order with its jobs (users: their own)."""
    order = await read(node, lambda c: get_order(c, order_id))
    if order is not None and not who.staff and order["owner_id"] != who.user_id:
        order = None
    return found(order, "order", order_id)
