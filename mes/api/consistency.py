"""Read consistency, chosen by the caller on every read (GET) route.

- `X-Read-Consistency: local` (default; query `?consistency=local`): this node's applied
  state, fast, possibly behind the leader.
- `X-Read-Consistency: linearizable`: a no-op is committed through Raft first (shared by
  concurrent readers), so the read sees every write acknowledged before it began.
- `X-Min-Raft-Index: N` (query `?min_index=N`): read-your-writes. Every write answers with
  `X-Raft-Index`, the index it was applied at; a read naming it waits until this node has
  applied it (at most RAFT_WRITE_TIMEOUT seconds, then 503 `raft_index_not_reached`).

Every read answers with `X-Raft-Index`: an index its state includes at least (send it back
as `X-Min-Raft-Index` and a later read on any node never goes back in time). Bad values
answer 400. A local read from a node that is not ready (no leader known, catching up, or
unable to apply; see GET /health) answers with `X-Node-Not-Ready` saying why: its state
may be far behind the farm's.
"""

from __future__ import annotations

from fastapi import Request

from mes.api.deps import NodeDep
from mes.api.errors import ApiError
from mes.app.raft_index import note_index, note_not_ready
from mes.raft.readiness import not_ready_reasons

CONSISTENCY_HEADER = "X-Read-Consistency"
CONSISTENCY_QUERY = "consistency"
MIN_INDEX_HEADER = "X-Min-Raft-Index"
MIN_INDEX_QUERY = "min_index"
LEVELS = ("local", "linearizable")
MAX_INDEX = 2**63 - 1
READ_METHODS = ("GET", "HEAD")


def _given(request: Request, header: str, query: str) -> str | None:
    """The value from the header or the query (they must agree when both are given)."""
    by_header = request.headers.getlist(header)
    by_query = request.query_params.getlist(query)
    values = {v.strip() for v in (*by_header, *by_query)}
    if len(values) > 1:
        raise ApiError(400, f"invalid_{query}", f"{header} (or ?{query}=) was given more than "
                       "once with different values", query)
    return values.pop() if values else None


def _level(request: Request) -> str:
    value = _given(request, CONSISTENCY_HEADER, CONSISTENCY_QUERY)
    if value is None:
        return "local"
    level = value.lower()
    if level not in LEVELS:
        raise ApiError(400, "invalid_consistency", f"{CONSISTENCY_HEADER} must be one of "
                       f"{', '.join(LEVELS)}, not {value[:40]!r}", CONSISTENCY_QUERY)
    return level


def _min_index(request: Request) -> int:
    value = _given(request, MIN_INDEX_HEADER, MIN_INDEX_QUERY)
    if value is None:
        return 0
    if not value.isascii() or not value.isdigit() or int(value) > MAX_INDEX:
        raise ApiError(400, "invalid_min_index", f"{MIN_INDEX_HEADER} must be a Raft index "
                       f"(a whole number, as in X-Raft-Index), not {value[:40]!r}",
                       MIN_INDEX_QUERY)
    return int(value)


async def read_consistency(request: Request, node: NodeDep) -> None:
    """Before a read (GET) route runs, bring this node to the consistency the caller asked."""
    if request.method not in READ_METHODS:
        return
    level = _level(request)
    index = _min_index(request)
    timeout = node.settings.raft_write_timeout
    if level == "linearizable":
        index = max(index, await node.barrier())
    if index and not await node.wait_applied(index, timeout):
        raise ApiError(503, "raft_index_not_reached",
                       f"this node has applied Raft index {node.applied_index()}; index "
                       f"{index} was not reached within {timeout:g} s", MIN_INDEX_QUERY,
                       headers={"Retry-After": "1"})
    note_index(node.applied_index())
    if level == "local" and not index:
        reasons = not_ready_reasons(node.progress())
        if reasons:  # the state read may be far behind the farm's: say so
            note_not_ready("; ".join(reasons))
