"""`/api/v1/cluster` and `/api/v1/health`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mes.api.deps import NodeDep

router = APIRouter(tags=["cluster"])


@router.get("/cluster")
async def cluster(node: NodeDep) -> dict[str, Any]:
    """This node, its role, the leader, term, commit and applied index, and every node."""
    return node.cluster()


@router.get("/workers")
async def workers(node: NodeDep) -> dict[str, Any]:
    """The printer workers of this node (they run on the leader only)."""
    pool = node.leader_loop.pool if node.leader_loop is not None else None
    if pool is None:
        return {"running": False}
    return {"running": True, **pool.stats()}


@router.get("/health")
async def health(node: NodeDep) -> dict[str, Any]:
    """Liveness: the process answers and its Raft thread runs."""
    view = node.cluster()
    return {"status": "ok", "node": view["id"], "role": view["role"], "leader": view["leader"]}
