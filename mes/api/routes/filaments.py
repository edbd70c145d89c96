"""`/api/v1/filaments`."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from mes.api.auth import Operator, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, page_by_id
from mes.api.schemas import FilamentCreate, FilamentOut, FilamentUpdate
from mes.state import listing, queries
from mes.state.ops import Op

router = authenticated_router("/filaments", "filaments")


@router.get("", response_model=list[FilamentOut])
async def list_filaments(request: Request, response: Response, node: NodeDep,
                         limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """Spools by id, one page at a time (the next page: `Link` rel=next, `X-Next-Cursor`)."""
    return await page_by_id(request, response, node, listing.filaments_page, limit, cursor)


@router.post("", status_code=201, response_model=FilamentOut)
async def create_filament(body: FilamentCreate, node: NodeDep, who: Operator,
                          idempotency_key: IdempotencyKey = None) -> Any:
    """Register a spool."""
    args = body.model_dump(exclude_none=True)
    args.setdefault("id", new_id(idempotency_key, who))
    return await commit(node, Op.FILAMENT_CREATE, args, idempotency_key, who)


@router.get("/{filament_id}", response_model=FilamentOut)
async def get_filament(filament_id: str, node: NodeDep) -> Any:
    """One spool."""
    return found(await read(node, lambda c: queries.get_filament(c, filament_id)), "filament",
                 filament_id)


@router.patch("/{filament_id}", response_model=FilamentOut)
async def update_filament(filament_id: str, body: FilamentUpdate, node: NodeDep, who: Operator,
                          idempotency_key: IdempotencyKey = None) -> Any:
    """Change fields of a spool."""
    args = {"id": filament_id, **body.model_dump(exclude_none=True)}
    return await commit(node, Op.FILAMENT_UPDATE, args, idempotency_key, who)


@router.delete("/{filament_id}", status_code=204)
async def delete_filament(filament_id: str, node: NodeDep, who: Operator,
                          idempotency_key: IdempotencyKey = None) -> Response:
    """Remove a spool that no queued or running job needs."""
    await commit(node, Op.FILAMENT_DELETE, {"id": filament_id}, idempotency_key, who)
    return Response(status_code=204)
