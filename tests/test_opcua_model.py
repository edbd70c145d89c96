"""The OPC UA model: the companion NodeSets verified and imported, our namespace and types."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from asyncua import Server, ua

from opcua_model.loader import FARM_URI, load_model
from opcua_model.nodesets import (
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
