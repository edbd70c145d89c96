"""The cluster as this node sees it, from pysyncobj's status."""

from __future__ import annotations

from typing import Any

ROLES = {0: "follower", 1: "candidate", 2: "leader"}


def cluster_view(status: dict[str, Any], applied_count: int) -> dict[str, Any]:
    """This node's id and role, the leader, term, indexes and every node's reachability."""
    self_id = str(status["self"])
    leader = status.get("leader")
    nodes = [{"id": self_id, "address": self_id, "self": True, "reachable": True,
              "role": ROLES.get(status["state"], "unknown")}]
    prefix = "partner_node_status_server_"
    for key, value in sorted(status.items()):
        if key.startswith(prefix):
            node_id = key[len(prefix):]
            nodes.append({"id": node_id, "address": node_id, "self": False,
                          "reachable": value == 2,
                          "role": _partner_role(node_id, leader, value == 2)})
    return {
        "id": self_id,
        "role": ROLES.get(status["state"], "unknown"),
        "leader": str(leader) if leader is not None else None,
        "term": status["raft_term"],
        "commit_index": status["commit_idx"],
        "applied_index": status["last_applied"],
        "applied_commands": applied_count,
        "has_quorum": bool(status.get("has_quorum")),
        "log_length": status["log_len"],
        "nodes": nodes,
    }


def _partner_role(node_id: str, leader: Any, reachable: bool) -> str:
    if leader is not None and str(leader) == node_id:
        return "leader"
    return "follower" if reachable else "unreachable"
