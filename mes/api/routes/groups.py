"""`/api/v1/groups`: printer groups, listed and renamed (or dissolved) as one."""

from __future__ import annotations

from typing import Any

from mes.api.auth import Caller, Operator, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, read
from mes.api.schemas import GroupOut, GroupRename, GroupRenamed
from mes.state.ops import Op
from mes.state.printer_groups import groups

router = authenticated_router("/groups", "printers")

@router.get("", response_model=list[GroupOut])
async def list_groups(node: NodeDep, _: Caller) -> Any:
    """Every printer group by name, with its number of printers."""
    return await read(node, groups)


@router.post("/rename", response_model=GroupRenamed)
async def rename_group(body: GroupRename, node: NodeDep, who: Operator,
                       idempotency_key: IdempotencyKey = None) -> Any:
    """Give every printer of `group` the group `to` at once (null: no group); 404 for a
    group no printer is in. Operators and admins."""
    return await commit(node, Op.GROUP_RENAME, {"group": body.group, "to": body.to},
                        idempotency_key, who)
