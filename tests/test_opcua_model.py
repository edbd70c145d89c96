"""The OPC UA model: the companion NodeSets verified and imported, our namespace and types."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from typing import Any

import pytest
from asyncua import Server, ua

from mes.opcua.address_space import AddressSpace, Namespaces
from mes.opcua.farm_state import PrinterView
from mes.opcua_model.loader import FARM_URI, load_model
from mes.opcua_model.nodesets import (
    REQUIRED,
    NodeSetError,
    bundle,
    read_verified,
    required_nodesets,
)


def test_ten_nodesets_in_import_order_each_verified() -> None:
    sets = required_nodesets()
    assert [s.uri for s in sets] == [uri for uri, _ in REQUIRED]
    assert len(sets) == 10
    assert sets[-1].uri == "http://opcfoundation.org/UA/AdditiveManufacturing/"
    for nodeset in sets:
        assert f'ModelUri="{nodeset.uri}"' in nodeset.xml
        assert f'Version="{nodeset.version}"' in nodeset.xml


def test_a_file_that_does_not_match_the_manifest_is_refused() -> None:
    folder = bundle()
    resource = required_nodesets()[0].resource
    digest = hashlib.sha256(gzip.decompress((folder / resource).read_bytes())).hexdigest()
    assert read_verified(folder, resource, digest)  # the real digest passes
    with pytest.raises(NodeSetError, match="does not match"):
        read_verified(folder, resource, "0" * 64)


async def test_the_whole_model_loads_with_our_types() -> None:
    server = Server()
    await server.init()
    ns = await load_model(server)
    namespaces = await server.get_namespace_array()
    for uri, _ in REQUIRED:
        assert uri in namespaces
    assert namespaces[ns] == FARM_URI
    am = namespaces.index("http://opcfoundation.org/UA/AdditiveManufacturing/")
    assert (await server.get_node(ua.NodeId(1005, am)).read_browse_name()).Name == \
        "AdditiveManufacturingType"
    base_event = server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
    subtypes = {(await n.read_browse_name()).to_string()
                for n in await base_event.get_children(refs=ua.ObjectIds.HasSubtype)}
    assert f"{ns}:JobStatusChangedEventType" in subtypes
    assert f"{ns}:PrintCompletedEventType" in subtypes
    completed = server.get_node(ua.NodeId(1002, ns))
    fields = {(await p.read_browse_name()).Name for p in await completed.get_properties()}
    assert fields == {"JobId", "PrinterId", "BedAwaitsClearing"}
    changed = server.get_node(ua.NodeId(1001, ns))
    fields = {(await p.read_browse_name()).Name for p in await changed.get_properties()}
    assert fields == {"JobId", "PrinterId", "FromStatus", "ToStatus"}
    farm = await server.nodes.objects.get_child(f"{ns}:PrintFarm")
    names = {(await c.read_browse_name()).Name for c in await farm.get_children()}
    assert names == {"Printers", "Jobs", "Filaments"}
    machinery = namespaces.index("http://opcfoundation.org/UA/Machinery/")
    await server.nodes.objects.get_child(f"{machinery}:Machines")


def _shape(data: Any, old: str, new: str) -> tuple[list[str], list[str]]:
    """A node's attributes (Value without timestamps) and references, as comparable text."""
    attrs = []
    for attr, value in sorted(data.attributes.items()):
        variant = value.value.Value if value.value is not None else None
        if isinstance(variant, ua.Variant) and isinstance(variant.Value, list):
            # AddNodes keeps an array value's list but not its is_array flag.
            variant = dataclasses.replace(variant, is_array=True)
        attrs.append(f"{int(attr)}={variant!r}".replace(old, new))
    refs = sorted(repr(r).replace(old, new) for r in data.references)
    return attrs, refs


async def test_fast_node_writer_makes_what_add_nodes_makes() -> None:
    """mes/opcua/fast_nodes.py writes asyncua's NodeData directly: it must equal AddNodes."""
    server = Server()
    await server.init()
    await load_model(server)
    ns = await Namespaces.resolve(server)
    spool = {"id": "spool", "type": "PLA", "color": "black", "total_weight_in_grams": 1000,
             "remaining_weight_in_grams": 900}

    def view(pid: str) -> PrinterView:
        printer = {"id": pid, "company": "Prusa", "model": "MK4", "opcua_name": None,
                   "filament_id": "spool", "bed_clear": True, "attention": None}
        return PrinterView(printer, None, None, spool)

    slow, fast = AddressSpace(server, ns, fast=False), AddressSpace(server, ns, fast=True)
    await slow.write(await slow.put_printers([view("slowone")]))
    await fast.write(await fast.put_printers([view("fastone")]))
    aspace = server.iserver.aspace
    slow_ids = slow._printers["slowone"] + slow._spools["slowone"][1]
    fast_ids = fast._printers["fastone"] + fast._spools["fastone"][1]
    assert len(slow_ids) == len(fast_ids) > 40
    for slow_id, fast_id in zip(slow_ids, fast_ids, strict=True):
        assert slow_id.Identifier.replace("slowone", "fastone") == fast_id.Identifier
        assert _shape(aspace[slow_id], "slowone", "fastone") == _shape(aspace[fast_id], "", ""), \
            slow_id
    machines = aspace[ua.NodeId(1001, ns.machinery)].references
    assert next(r for r in machines if r.NodeId == slow_ids[0]).BrowseName.Name == "slowone"
    assert next(r for r in machines if r.NodeId == fast_ids[0]).BrowseName.Name == "fastone"


async def test_what_the_importer_leaves_out_is_put_back() -> None:
    """Every variable has a DataType (a NodeSet that gives none means BaseDataType), and
    DI's nine parentless FunctionalGroupType instances exist (mes/opcua_model/completion.py)."""
    server = Server()
    await server.init()
    await load_model(server)
    aspace = server.iserver.aspace
    untyped = []
    for nodeid, data in list(aspace._nodes.items()):
        attrs = data.attributes
        if attrs[ua.AttributeIds.NodeClass].value.Value.Value in (
                ua.NodeClass.Variable, ua.NodeClass.VariableType):
            datatype = attrs[ua.AttributeIds.DataType].value.Value.Value
            if datatype is None or datatype.is_null():
                untyped.append(nodeid.to_string())
    assert untyped == []
    di = await server.get_namespace_index("http://opcfoundation.org/UA/DI/")
    marker = server.get_node(ua.NodeId(6017, di))  # <ParameterIdentifier>: none given
    assert await marker.read_data_type() == ua.NodeId(ua.ObjectIds.BaseDataType)
    names = {}
    for number in (73, 74, 75, 90, 91, 92, 93, 94, 95):
        node = server.get_node(ua.NodeId(number, di))
        names[(await node.read_browse_name()).Name] = await node.read_type_definition()
    assert sorted(names) == sorted(["Configuration", "Tuning", "Maintenance", "Diagnostics",
                                    "Statistics", "Status", "Operational",
                                    "OperationCounters", "Identification"])
    assert set(names.values()) == {ua.NodeId(1005, di)}  # FunctionalGroupType


async def test_fast_delete_leaves_no_reference_to_what_it_deleted() -> None:
    """AddressSpace._delete removes a job's and a spool's nodes as DeleteNodes with
    DeleteTargetReferences does (mes/opcua/fast_nodes.py), without its walk over every
    node: afterwards no node anywhere references them, and the rest is untouched."""
    server = Server()
    await server.init()
    await load_model(server)
    ns = await Namespaces.resolve(server)
    space = AddressSpace(server, ns, fast=True)
    spool = {"id": "s1", "type": "PLA", "color": "black", "total_weight_in_grams": 1000,
             "remaining_weight_in_grams": 900}
    printer = {"id": "p1", "company": "Prusa", "model": "MK4", "opcua_name": None,
               "filament_id": "s1", "bed_clear": True, "attention": None}
    await space.write(await space.put_printers([PrinterView(printer, None, None, spool)]))
    jobs = [{"id": f"j{i}", "status": "Queued", "owner_id": "u", "filepath": "a.gcode",
             "printer_id": None, "assigned_printer_id": None, "filament_id": "s1"}
            for i in range(3)]
    await space.write(await space.put_jobs(jobs))
    aspace = server.iserver.aspace

    def references() -> list[tuple[ua.NodeId, ua.NodeId]]:
        return [(nid, ref.NodeId) for nid, data in list(aspace._nodes.items())
                for ref in data.references]

    before = references()
    gone = space._jobs["j1"] + space._spools["p1"][1]
    await space.drop_job("j1")
    await space.write(await space.put_printers([PrinterView(
        {**printer, "filament_id": None}, None, None, None)]))  # the spool taken out
    assert not any(nid in aspace for nid in gone)
    after = references()
    assert [pair for pair in after if pair[1] in gone] == []
    kept = set(after)
    assert [pair for pair in before if pair[0] not in gone and pair[1] not in gone
            and pair not in kept] == []  # nothing else lost a reference
    assert space.job_ids == {"j0", "j2"}
