"""`/metrics`: the node's Prometheus metrics (outside /api/v1, as Prometheus expects)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from mes.api.auth import UNAUTHORIZED, authenticate, bearer_scheme, require
from mes.api.deps import NodeDep

router = APIRouter(tags=["metrics"])
# The classic text format every Prometheus version reads (our names need no escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics_access(request: Request, node: NodeDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> None:
    """Operators and admins (a bearer token, as Prometheus' `authorization` sends it), or
    anyone when METRICS_PUBLIC is true."""
    if node.settings.http.metrics_public:
        return
    await require("operator")(await authenticate(request, node, credentials))


METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {CONTENT_TYPE: {}},
          "description": "the Prometheus text format (version 0.0.4)"},
    **UNAUTHORIZED,
}


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSES,
            dependencies=[Depends(metrics_access)])
async def metrics(node: NodeDep) -> Response:
    """This node's metrics: Raft progress, commands applied and rejected, HTTP requests by
    route, printer workers, printers by state, jobs by status, the blob store."""
    body = await asyncio.to_thread(node.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
