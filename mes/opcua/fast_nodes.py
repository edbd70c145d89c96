"""Add many nodes to asyncua's address space at a fraction of AddNodes' cost.

asyncua's `add_nodes` builds every attribute through a generic path (about 0.25 ms per node,
mostly Variant and DataValue construction for 24 attribute names). For the farm's own nodes,
whose items we build ourselves (parents exist, ids are new, attributes known), this writes
the same NodeData directly: the same attributes and the same references in both directions.
It depends on asyncua 2.1's internals (NodeData, AttributeValue); tests/test_opcua_model.py
compares it with `add_nodes` node by node, so an upgrade that changes them fails there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import AttributeValue, NodeData

_A = ua.AttributeIds
_V = ua.VariantType
_HAS_TYPE_DEFINITION = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
_FALSE = ua.Variant(False, _V.Boolean)
_TRUE = ua.Variant(True, _V.Boolean)


class NodeWriter:
    """Writes NodeData for AddNodesItems straight into one server's address space."""

    def __init__(self, server: Server) -> None:
        self.aspace = server.iserver.aspace
        self._targets: dict[ua.NodeId, tuple[Any, Any, Any, Any]] = {}
        self._constants: dict[tuple[int, type, Any], ua.Variant] = {}

    def _const(self, vtype: ua.VariantType, value: Any) -> ua.Variant:
        """Variants are immutable: one per distinct constant value is shared."""
        key = (int(vtype), type(value), value)
        variant = self._constants.get(key)
        if variant is None:
            variant = self._constants[key] = ua.Variant(value, vtype)
        return variant

    def _describe(self, nodeid: ua.NodeId) -> tuple[Any, Any, Any, Any]:
        """NodeClass, BrowseName, DisplayName and type definition of an existing node."""
        found = self._targets.get(nodeid)
        if found is None:
            data = self.aspace.get(nodeid)
            if data is None:
                raise KeyError(f"{nodeid.to_string()} does not exist")
            attrs = data.attributes
            typedef = next((r.NodeId for r in data.references
                            if r.IsForward and r.ReferenceTypeId == _HAS_TYPE_DEFINITION),
                           ua.NodeId())
            found = (attrs[_A.NodeClass].value.Value.Value, attrs[_A.BrowseName].value.Value.Value,
                     attrs[_A.DisplayName].value.Value.Value, typedef)
            self._targets[nodeid] = found
        return found

    def add(self, items: list[ua.AddNodesItem]) -> None:
        """Add the nodes (parents first); raises if an id exists or a parent is missing."""
        aspace = self.aspace
        now = datetime.now(UTC)
        try:
            for item in items:
                self._add(aspace, item, now)
        finally:
            self._targets.clear()  # only the parents of this batch are cached

    def _add(self, aspace: Any, item: ua.AddNodesItem, now: datetime) -> None:
        nodeid = item.RequestedNewNodeId
        if nodeid in aspace:
            raise ValueError(f"{nodeid.to_string()} already exists")
        parent = aspace.get(item.ParentNodeId)
        if parent is None:
            raise KeyError(f"parent {item.ParentNodeId.to_string()} does not exist")
        a = item.NodeAttributes
        node_class = item.NodeClass
        data = NodeData(nodeid)
        attrs = data.attributes
        const = self._const

        def put(attr: ua.AttributeIds, variant: ua.Variant) -> None:
            attrs[attr] = AttributeValue(ua.DataValue(variant))

        put(_A.NodeId, ua.Variant(nodeid, _V.NodeId))
        put(_A.BrowseName, ua.Variant(item.BrowseName, _V.QualifiedName))
        put(_A.NodeClass, const(_V.Int32, node_class))
        put(_A.DisplayName, ua.Variant(a.DisplayName, _V.LocalizedText))
        put(_A.Description, ua.Variant(a.Description, _V.LocalizedText))
        put(_A.WriteMask, const(_V.UInt32, a.WriteMask))
        put(_A.UserWriteMask, const(_V.UInt32, a.UserWriteMask))
        if node_class == ua.NodeClass.Object:
            put(_A.EventNotifier, const(_V.Byte, a.EventNotifier))
        else:
            put(_A.AccessLevel, const(_V.Byte, a.AccessLevel))
            put(_A.UserAccessLevel, const(_V.Byte, a.UserAccessLevel))
            put(_A.ArrayDimensions, ua.Variant(a.ArrayDimensions, _V.UInt32, is_array=True))
            put(_A.DataType, ua.Variant(a.DataType, _V.NodeId))
            put(_A.Historizing, _TRUE if a.Historizing else _FALSE)
            put(_A.MinimumSamplingInterval, const(_V.Double, a.MinimumSamplingInterval))
            put(_A.ValueRank, const(_V.Int32, a.ValueRank))
            attrs[_A.Value] = AttributeValue(ua.DataValue(
                a.Value, SourceTimestamp=now,
                ServerTimestamp=now if aspace.force_server_timestamp else None))
        aspace[nodeid] = data
        parent_class, parent_name, parent_display, parent_type = self._describe(item.ParentNodeId)
        parent.references.append(ua.ReferenceDescription(
            ReferenceTypeId=item.ReferenceTypeId, IsForward=True, NodeId=nodeid,
            BrowseName=item.BrowseName, DisplayName=a.DisplayName, NodeClass=node_class,
            TypeDefinition=item.TypeDefinition))
        data.references.append(ua.ReferenceDescription(
            ReferenceTypeId=item.ReferenceTypeId, IsForward=False, NodeId=item.ParentNodeId,
            BrowseName=parent_name, DisplayName=parent_display, NodeClass=parent_class,
            TypeDefinition=parent_type if parent_class in (
                ua.NodeClass.Object, ua.NodeClass.Variable) else ua.NodeId()))
        type_class, type_name, type_display, _ = self._describe(item.TypeDefinition)
        data.references.append(ua.ReferenceDescription(
            ReferenceTypeId=_HAS_TYPE_DEFINITION, IsForward=True, NodeId=item.TypeDefinition,
            BrowseName=type_name, DisplayName=type_display, NodeClass=type_class))
        self._targets[nodeid] = (node_class, item.BrowseName, a.DisplayName,
                                 item.TypeDefinition)
