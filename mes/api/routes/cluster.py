"""`/api/v1/cluster`, `/api/v1/cluster/digest`, `/api/v1/workers` (with a token) and
`/api/v1/health`, `/api/v1/health/live` (for anyone)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from mes.api.auth import UNAUTHORIZED, Operator, authenticate
from mes.api.consistency import read_consistency
from mes.api.deps import NodeDep
from mes.api.errors import error_body
from mes.app.ports import Farm
from mes.raft.readiness import not_ready_reasons
from mes.state import queries
from mes.state.digest import state_digest

router = APIRouter(tags=["cluster"], responses=UNAUTHORIZED,
                   dependencies=[Depends(authenticate), Depends(read_consistency)])
# Health answers everyone (load balancers and orchestrators carry no token).
health_router = APIRouter(tags=["cluster"])

NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "not ready: no leader, catching up or unable to apply"}}


@router.get("/cluster")
async def cluster(node: NodeDep, _: Operator) -> dict[str, Any]:
    """This node, its role, the leader, term, commit and applied index, and every node with
    its lease and the printers it drives (`printers`), plus the printers no node drives
    (operators and admins: it names every node's Raft address)."""
    view = node.cluster()
    shards = await node.read(shard_view)
    for entry in view["nodes"]:
        entry.update(shards["nodes"].get(entry["address"], {"lease": None, "printers": []}))
    view["undriven_printers"] = shards["undriven"]
    return view


def shard_view(conn: Connection) -> dict[str, Any]:
    """Per node its lease and the printers it drives; the printers no node drives."""
    leases = queries.leases(conn)
    live = {lease["node"] for lease in leases if not lease["expired"]}
    nodes: dict[str, dict[str, Any]] = {
        lease["node"]: {"lease": {"seq": lease["seq"], "renewed_at": lease["renewed_at"],
                                  "expired": lease["expired"]}, "printers": []}
        for lease in leases}
    undriven = []
    for slot in queries.shard_slots(conn):
        state = queries.drive_state({"worker": True, "hub": slot["hub"]}, slot, live)
        if state["driven_by"] is not None:
            nodes.setdefault(state["driven_by"], {"lease": None, "printers": []})[
                "printers"].append(slot["id"])
        else:
            undriven.append({"id": slot["id"], "hub": slot["hub"],
                             "drive_state": state["drive_state"]})
    return {"nodes": nodes, "undriven": undriven}


@router.get("/cluster/digest")
async def digest(node: NodeDep, _: Operator) -> dict[str, Any]:
    """A SHA-256 of this node's whole applied state and the applied index it was taken at."""
    index, value = await asyncio.to_thread(node.read_at_applied, state_digest)
    return {"applied_index": index, "digest": value}


@router.get("/workers")
async def workers(node: NodeDep, _: Operator) -> dict[str, Any]:
    """The printer workers of this node (for the printers assigned to it), its lease and,
    on the leader, the balancer."""
    return node.workers_view()


@health_router.get("/health", responses=NOT_READY)
async def health(node: NodeDep) -> Any:
    """Readiness: 200 when a leader is known, this node has caught up and it applies, and
    its OPC UA server (when on) listens; 503 with the reasons otherwise. Reads only the Raft
    engine's counters and the listeners' flags, no database."""
    progress = node.progress()
    body = {"node": node.settings.raft_self, "role": _role(node),
            "leader": progress.leader, "applied_index": progress.applied_index,
            "commit_index": progress.commit_index}
    reasons = not_ready_reasons(progress) + node.listener_problems()
    if reasons:
        return JSONResponse({**error_body("not_ready", "; ".join(reasons)),
                             "status": "not_ready", "reasons": reasons, **body}, 503)
    return {"status": "ok", **body}


RAFT_STOPPED: dict[int | str, dict[str, Any]] = {503: {"description": "the Raft thread stopped"}}


@health_router.get("/health/live", responses=RAFT_STOPPED)
async def live(node: NodeDep) -> Any:
    """Liveness: 200 while the process answers and its Raft thread runs, ready or not."""
    body = {"node": node.settings.raft_self, "role": _role(node)}
    if not node.raft_alive():
        return JSONResponse({**error_body("raft_stopped", "the Raft thread has stopped"),
                             "status": "dead", **body}, 503)
    return {"status": "ok", **body}


def _role(node: Farm) -> str:
    return node.role()
