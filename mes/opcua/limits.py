"""The embedded server's operation limits (Part 5, ServerCapabilities/OperationLimits): what
it announces is what it enforces. A request with more items than its limit is refused whole
with Bad_TooManyOperations, before any item is served."""

from __future__ import annotations

from asyncua import Server, ua
from asyncua.common.utils import ServiceError

_L = "Server_ServerCapabilities_OperationLimits_"
# OperationLimits name -> the most items one request may hold.
OPERATION_LIMITS = {
    "MaxNodesPerRead": 10_000,
    "MaxNodesPerWrite": 1_000,
    "MaxNodesPerBrowse": 1_000,
    "MaxNodesPerTranslateBrowsePathsToNodeIds": 1_000,
    "MaxNodesPerMethodCall": 100,
    "MaxMonitoredItemsPerCall": 10_000,
    "MaxNodesPerHistoryReadData": 100,
    "MaxNodesPerHistoryReadEvents": 100,
}
# Browse continuation points one session may hold (the oldest is released beyond it).
MAX_BROWSE_CONTINUATION_POINTS = 16


def within(limit: str, count: int) -> None:
    """Raise Bad_TooManyOperations when `count` items exceed OperationLimits/`limit`."""
    if count > OPERATION_LIMITS[limit]:
        raise ServiceError(ua.StatusCodes.BadTooManyOperations)


async def announce(server: Server) -> None:
    """Write the limits into the server's ServerCapabilities (asyncua leaves them 0:
    "no limit", which clients then trust)."""
    for name, value in OPERATION_LIMITS.items():
        node = server.get_node(ua.NodeId(getattr(ua.ObjectIds, _L + name)))
        await node.write_value(ua.Variant(value, ua.VariantType.UInt32))
    points = server.get_node(
        ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_MaxBrowseContinuationPoints))
    await points.write_value(ua.Variant(MAX_BROWSE_CONTINUATION_POINTS, ua.VariantType.UInt16))
