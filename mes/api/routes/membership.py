"""`/api/v1/cluster/nodes`: add and remove nodes while the cluster runs (admins).

Adding is the first step of starting a new hub: commit the new address, then start the new
node with RAFT_PEERS naming every current node (and the same CLUSTER_SECRET); it catches up
from the leader's snapshot. Removing a node commits its removal and forgets its HTTP address;
stop its process afterwards. One change at a time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mes.api.auth import Admin, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, read
from mes.api.errors import ApiError
from mes.raft.membership import (
    valid_address,
)
from mes.state import queries
from mes.state.ops import Op

router = authenticated_router("/cluster/nodes", "cluster")


class NewNode(BaseModel):
    """A node to add: its Raft address as it will set RAFT_SELF."""

    address: str = Field(min_length=3, max_length=261, examples=["10.0.0.14:7000"])


def _checked(address: str) -> str:
    if not valid_address(address):
        raise ApiError(400, "invalid_address", "a Raft address is host:port (port 1-65535)",
                       "address")
    return address


async def _change(node: NodeDep, action: str, address: str) -> None:
    await node.change_membership("add" if action == "add" else "remove", address)


def _answer(node: NodeDep) -> dict[str, Any]:
    return {"members": node.members(), "leader": node.cluster()["leader"]}


@router.post("", status_code=201)
async def add_node(body: NewNode, node: NodeDep, _: Admin) -> dict[str, Any]:
    """Add a node to the cluster; then start it with RAFT_PEERS naming every member."""
    address = _checked(body.address)
    if address in node.members():
        raise ApiError(409, "already_member", f"{address} is already a member", "address")
    await _change(node, "add", address)
    return {"added": address, **_answer(node)}


@router.delete("/{address}")
async def remove_node(address: str, node: NodeDep, who: Admin,
                      idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    """Remove a node from the cluster (not the leader); then stop its process.

    Safe to retry: a removal whose answer was lost (or whose second step, forgetting the
    node's URL, did not commit) is completed by the retry and answers 200 again; with the
    same `Idempotency-Key` also once it is complete."""
    _checked(address)
    forget = {"raft_address": address}
    if address not in node.members():
        known = await read(node, lambda c: any(n["raft_address"] == address
                                               for n in queries.list_nodes(c)))
        retried = idempotency_key is not None and await node.commands.applied(
            Op.NODE_FORGET, forget, who, idempotency_key)
        if not known and not retried:
            raise ApiError(404, "node_not_found", f"{address} is not a member of the cluster")
        await commit(node, Op.NODE_FORGET, forget, idempotency_key, who)
        return {"removed": address, **_answer(node)}
    if address == node.cluster()["leader"]:
        raise ApiError(409, "cannot_remove_leader", f"{address} leads the cluster now; stop "
                       "it (another node takes over) or wait for leadership to move, then "
                       "remove it")
    await _change(node, "remove", address)
    await commit(node, Op.NODE_FORGET, forget, idempotency_key, who)
    return {"removed": address, **_answer(node)}
