"""What asyncua 2.1's NodeSet importer leaves out, put back after the import.

- A UAVariable or UAVariableType without a DataType attribute has the schema's default,
  BaseDataType (i=24); asyncua leaves its DataType the null NodeId (8 nodes of DI and
  PADIM, which clients show with an empty DataType).
- DI declares nine objects without a parent (Configuration, Tuning, Maintenance,
  Diagnostics, Statistics, Status, Operational, OperationCounters, Identification: the
  standard BrowseNames of FunctionalGroupType instances, OPC 10000-100 4.4); asyncua skips
  them. They are added as they are declared: reachable by their NodeId, under no parent.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import AttributeValue, NodeData

_NS = {"ua": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"}
_A = ua.AttributeIds
_BASE_DATA_TYPE = ua.NodeId(ua.ObjectIds.BaseDataType)
_TYPED = (ua.NodeClass.Variable, ua.NodeClass.VariableType)


def default_data_types(server: Server) -> list[ua.NodeId]:
    """Give every variable and variable type without a DataType BaseDataType; returns
    their ids."""
    fixed = []
    for nodeid, data in list(server.iserver.aspace._nodes.items()):
        attrs = data.attributes
        node_class = attrs[_A.NodeClass].value.Value.Value
        current = attrs.get(_A.DataType)
        if node_class in _TYPED and (current is None or current.value.Value.Value in (
                None, ua.NodeId())):
            attrs[_A.DataType] = AttributeValue(ua.DataValue(
                ua.Variant(_BASE_DATA_TYPE, ua.VariantType.NodeId)))
            fixed.append(nodeid)
    return fixed


def parentless_objects(server: Server, xml: str, ns: int) -> list[ua.NodeId]:
    """Add the UAObjects of one NodeSet (namespace index `ns` on this server) that declare
    no parent and were not imported; returns their ids."""
    aspace = server.iserver.aspace
    added = []
    for element in ET.fromstring(xml).findall("ua:UAObject", _NS):
        if element.get("ParentNodeId"):
            continue
        nodeid = _local(element.get("NodeId", ""), ns)
        if nodeid is None or nodeid in aspace:
            continue
        typedef = next((_local(ref.text or "", ns)
                        for ref in element.findall("ua:References/ua:Reference", _NS)
                        if ref.get("ReferenceType") == "HasTypeDefinition"), None)
        name = element.get("BrowseName", "").split(":", 1)[-1]
        display = element.findtext("ua:DisplayName", default=name, namespaces=_NS)
        description = element.findtext("ua:Description", default="", namespaces=_NS)
        data = NodeData(nodeid)
        for attr, variant in (
                (_A.NodeId, ua.Variant(nodeid, ua.VariantType.NodeId)),
                (_A.NodeClass, ua.Variant(ua.NodeClass.Object, ua.VariantType.Int32)),
                (_A.BrowseName, ua.Variant(ua.QualifiedName(name, ns),
                                           ua.VariantType.QualifiedName)),
                (_A.DisplayName, ua.Variant(ua.LocalizedText(display),
                                            ua.VariantType.LocalizedText)),
                (_A.Description, ua.Variant(ua.LocalizedText(description),
                                            ua.VariantType.LocalizedText)),
                (_A.WriteMask, ua.Variant(0, ua.VariantType.UInt32)),
                (_A.UserWriteMask, ua.Variant(0, ua.VariantType.UInt32)),
                (_A.EventNotifier, ua.Variant(0, ua.VariantType.Byte))):
            data.attributes[attr] = AttributeValue(ua.DataValue(variant))
        if typedef is not None and typedef in aspace:
            data.references.append(_type_reference(aspace, typedef))
        aspace[nodeid] = data
        added.append(nodeid)
    return added


def _local(text: str, ns: int) -> ua.NodeId | None:
    """A NodeSet's own `ns=1;i=N` (its first namespace) as this server's NodeId."""
    if not text.startswith("ns=1;i="):
        return None
    return ua.NodeId(int(text[len("ns=1;i="):]), ns)


def _type_reference(aspace: Any, typedef: ua.NodeId) -> ua.ReferenceDescription:
    attrs = aspace[typedef].attributes
    return ua.ReferenceDescription(
        ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasTypeDefinition), IsForward=True,
        NodeId=typedef, BrowseName=attrs[_A.BrowseName].value.Value.Value,
        DisplayName=attrs[_A.DisplayName].value.Value.Value,
        NodeClass=ua.NodeClass.ObjectType)
