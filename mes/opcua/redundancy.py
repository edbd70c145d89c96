"""Raft leadership shown the OPC UA way: non-transparent redundancy and ServiceLevel.

Every node lists every node's ApplicationUri in `ServerUriArray` and publishes its own
`ServiceLevel` in Part 4's bands (6.6.2.4.2: 0 Maintenance, 1 NoData, 2-199 Degraded,
200-255 Healthy): 255 on the leader with a quorum, 200 on a follower that reaches the leader
(it serves reads: Healthy, below the leader), 1 without a leader (or a leader without a
quorum), 0 while the address space is being built. A redundancy-aware client picks the
server with the highest ServiceLevel: the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from asyncua import Server, ua

log = logging.getLogger(__name__)

LEADER = 255
FOLLOWER = 200
NO_LEADER = 1
MAINTENANCE = 0
HOT = 3  # RedundancySupport.Hot
UPDATE_INTERVAL = 0.25

_REDUNDANCY = ua.NodeId(ua.ObjectIds.Server_ServerRedundancy)
_SERVER_URI_ARRAY = ua.NodeId(11314)  # Server_ServerRedundancy_ServerUriArray
_SUPPORT = ua.NodeId(ua.ObjectIds.Server_ServerRedundancy_RedundancySupport)
_SERVICE_LEVEL = ua.NodeId(ua.ObjectIds.Server_ServiceLevel)


def application_uri(raft_self: str) -> str:
    """A node's ApplicationUri, derived from its Raft address (the same on every node)."""
    return f"urn:mes:node:{raft_self}"


def service_level(status: dict[str, Any]) -> int:
    """ServiceLevel from pysyncobj's status: the leader highest, no leader lowest."""
    leader = status.get("leader")
    if leader is None:
        return NO_LEADER
    if status.get("state") == 2:
        return LEADER if status.get("has_quorum") else NO_LEADER
    if str(leader) == str(status.get("self")):
        return NO_LEADER
    reachable = status.get(f"partner_node_status_server_{leader}") == 2
    return FOLLOWER if reachable else NO_LEADER


async def setup_redundancy(server: Server, server_uris: list[str]) -> None:
    """Retype ServerRedundancy to NonTransparentRedundancyType (Hot) listing `server_uris`."""
    session = server.iserver.isession
    refs = await server.get_node(_REDUNDANCY).get_references(
        refs=ua.ObjectIds.HasTypeDefinition, direction=ua.BrowseDirection.Forward)
    await session.delete_references([ua.DeleteReferencesItem(
        SourceNodeId=_REDUNDANCY, ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasTypeDefinition),
        IsForward=True, TargetNodeId=ref.NodeId, DeleteBidirectional=True) for ref in refs])
    await session.add_references([ua.AddReferencesItem(
        SourceNodeId=_REDUNDANCY, ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasTypeDefinition),
        IsForward=True, TargetNodeId=ua.NodeId(ua.ObjectIds.NonTransparentRedundancyType),
        TargetNodeClass=ua.NodeClass.ObjectType)])
    children = await server.get_node(_REDUNDANCY).get_references(
        refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward)
    names = {ref.BrowseName.Name: ref for ref in children}
    stale = names.get("RedundantServerArray")
    if stale is not None:
        await session.delete_references([ua.DeleteReferencesItem(
            SourceNodeId=_REDUNDANCY, ReferenceTypeId=stale.ReferenceTypeId, IsForward=True,
            TargetNodeId=stale.NodeId, DeleteBidirectional=True)])
    if "ServerUriArray" not in names:
        await session.add_references([ua.AddReferencesItem(
            SourceNodeId=_REDUNDANCY, ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasProperty),
            IsForward=True, TargetNodeId=_SERVER_URI_ARRAY, TargetNodeClass=ua.NodeClass.Variable)])
    await server.write_attribute_value(_SERVER_URI_ARRAY, ua.DataValue(
        ua.Variant(server_uris, ua.VariantType.String, is_array=True)))
    await server.write_attribute_value(_SUPPORT, ua.DataValue(
        ua.Variant(HOT, ua.VariantType.Int32)))


class ServiceLevel:
    """Publishes this node's ServiceLevel, following the Raft status."""

    def __init__(self, server: Server, status: Callable[[], dict[str, Any]]) -> None:
        self.server = server
        self._status = status
        self.level: int | None = None
        self.ready = False  # False while the address space is being built

    async def update(self) -> int:
        """Compute and publish the level now (only written when it changed)."""
        level = MAINTENANCE
        if self.ready:
            try:
                level = service_level(self._status())
            except Exception:  # pysyncobj may be stopping
                level = NO_LEADER
        if level != self.level:
            self.level = level
            await self.server.write_attribute_value(_SERVICE_LEVEL, ua.DataValue(
                ua.Variant(level, ua.VariantType.Byte)))
        return level

    async def run(self, interval: float = UPDATE_INTERVAL) -> None:
        """Update the level periodically until cancelled."""
        while True:
            with contextlib.suppress(Exception):
                await self.update()
            await asyncio.sleep(interval)
