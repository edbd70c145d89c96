"""`/api/v1/audit`: who did what (admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response

from mes.api.account_schemas import AuditOut
from mes.api.auth import Admin, authenticated_router
from mes.api.deps import NodeDep, read
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, paged
from mes.state import listing

router = authenticated_router("/audit", "audit")


@router.get("", response_model=list[AuditOut])
async def audit(request: Request, response: Response, node: NodeDep, _: Admin,
                actor: Annotated[str | None, Query(max_length=64)] = None,
                limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """Every change made at a user's request, oldest first: when, who, which command, on
    what. Secrets never appear (commands are recorded by name and target only)."""
    after = decode_cursor(cursor, int)
    rows = await read(node, lambda c: listing.audit_page(
        c, actor, after[0] if after else None, limit + 1))
    return paged(request, response, rows, limit, lambda r: [r["seq"]])
