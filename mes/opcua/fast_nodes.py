"""Add many nodes to asyncua's address space at a fraction of AddNodes' cost.

asyncua's `add_nodes` builds every attribute through a generic path (about 0.25 ms per node,
mostly Variant and DataValue construction for 24 attribute names). For the farm's own nodes,
whose items we build ourselves (parents exist, ids are new, attributes known), this writes
the same NodeData directly: the same attributes and the same references in both directions.
It depends on asyncua 2.1's internals (NodeData, AttributeValue); tests/test_opcua_model.py
compares it with `add_nodes` node by node, so an upgrade that changes them fails there.

Memory: an attribute costs about 0.5 KB (its AttributeValue, DataValue, Variant and an empty
callback dict), 15 of them per variable. The attributes that never change after creation
and are the same on many nodes (NodeClass, the masks and access levels, DataType, ValueRank,
Description, a variable's names, ...) share one AttributeValue per distinct value, and the
nodes of one type one HasTypeDefinition reference. Nothing writes them: remote sessions are
never asyncua's Admin, the only role asyncua lets write an attribute other than Value, and
the farm writes only Value and a printer object's BrowseName and DisplayName (never
shared).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import AttributeValue, NodeData

_A = ua.AttributeIds
_V = ua.VariantType
_HAS_TYPE_DEFINITION = ua.NodeId(ua.ObjectIds.HasTypeDefinition)


class NodeWriter:
    """Writes NodeData for AddNodesItems straight into one server's address space."""

    def __init__(self, server: Server) -> None:
        self.aspace = server.iserver.aspace
        self._targets: dict[ua.NodeId, tuple[Any, Any, Any, Any]] = {}
        self._shared: dict[tuple[Any, ...], AttributeValue] = {}
        self._type_refs: dict[ua.NodeId, ua.ReferenceDescription] = {}

    def _fixed(self, vtype: ua.VariantType, value: Any, key: Any = None,
               is_array: bool = False) -> AttributeValue:
        """The one AttributeValue of a never-written attribute with this value (`key`: a
        hashable stand-in for an unhashable value)."""
        found_key = (int(vtype), type(value), value if key is None else key, is_array)
        found = self._shared.get(found_key)
        if found is None:
            found = self._shared[found_key] = AttributeValue(
                ua.DataValue(ua.Variant(value, vtype, is_array=is_array)))
        return found

    def delete(self, ids: list[ua.NodeId], service: Any) -> None:
        """Delete nodes this writer made (and the references to them), as DeleteNodes with
        DeleteTargetReferences does, without its walk over every node of the address space
        per node deleted (80,000 nodes: a job's six took 15 % of a busy node's CPU).

        Every reference to a node made here has its mirror on that node (parent and child
        both hold theirs), so only the nodes it references are looked at; a node may also
        reference others that do not reference it (its type): nothing is removed there.
        Subscriptions to a deleted value are told Bad_NodeIdUnknown (`service`: asyncua's
        NodeManagementService, whose callback code this reuses)."""
        aspace = self.aspace
        gone = set(ids)
        for nodeid in ids:
            data = aspace.get(nodeid)
            if data is None:
                continue
            for ref in data.references:
                if ref.NodeId in gone:
                    continue
                other = aspace.get(ref.NodeId)
                if other is not None and any(r.NodeId == nodeid for r in other.references):
                    other.references[:] = [r for r in other.references if r.NodeId != nodeid]
            service._delete_node_callbacks(data)
            del aspace[nodeid]

    def type_reference(self, typedef: ua.NodeId) -> ua.ReferenceDescription:
        """The HasTypeDefinition reference to `typedef`: one object for every node of that
        type (references are replaced, never changed in place)."""
        found = self._type_refs.get(typedef)
        if found is None:
            type_class, type_name, type_display, _ = self._describe(typedef)
            found = self._type_refs[typedef] = ua.ReferenceDescription(
                ReferenceTypeId=_HAS_TYPE_DEFINITION, IsForward=True, NodeId=typedef,
                BrowseName=type_name, DisplayName=type_display, NodeClass=type_class)
        return found

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
        fixed = self._fixed

        def put(attr: ua.AttributeIds, variant: ua.Variant) -> None:
            attrs[attr] = AttributeValue(ua.DataValue(variant))

        put(_A.NodeId, ua.Variant(nodeid, _V.NodeId))
        attrs[_A.NodeClass] = fixed(_V.Int32, node_class)
        name, display = item.BrowseName, a.DisplayName
        if node_class == ua.NodeClass.Object:  # a printer's object is renamed with it
            put(_A.BrowseName, ua.Variant(name, _V.QualifiedName))
            put(_A.DisplayName, ua.Variant(display, _V.LocalizedText))
        else:  # a variable's names are its type's member names: shared
            attrs[_A.BrowseName] = fixed(_V.QualifiedName, name,
                                         (name.NamespaceIndex, name.Name))
            attrs[_A.DisplayName] = fixed(_V.LocalizedText, display,
                                          (display.Locale, display.Text))
        text = a.Description
        attrs[_A.Description] = fixed(_V.LocalizedText, text, (text.Locale, text.Text))
        attrs[_A.WriteMask] = fixed(_V.UInt32, a.WriteMask)
        attrs[_A.UserWriteMask] = fixed(_V.UInt32, a.UserWriteMask)
        if node_class == ua.NodeClass.Object:
            attrs[_A.EventNotifier] = fixed(_V.Byte, a.EventNotifier)
        else:
            attrs[_A.AccessLevel] = fixed(_V.Byte, a.AccessLevel)
            attrs[_A.UserAccessLevel] = fixed(_V.Byte, a.UserAccessLevel)
            dims = a.ArrayDimensions
            attrs[_A.ArrayDimensions] = fixed(_V.UInt32, dims,
                                              None if dims is None else tuple(dims), True)
            attrs[_A.DataType] = fixed(_V.NodeId, a.DataType)
            attrs[_A.Historizing] = fixed(_V.Boolean, bool(a.Historizing))
            attrs[_A.MinimumSamplingInterval] = fixed(_V.Double, a.MinimumSamplingInterval)
            attrs[_A.ValueRank] = fixed(_V.Int32, a.ValueRank)
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
        data.references.append(self.type_reference(item.TypeDefinition))
        self._targets[nodeid] = (node_class, item.BrowseName, a.DisplayName,
                                 item.TypeDefinition)
