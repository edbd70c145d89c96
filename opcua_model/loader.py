"""Load the whole model into an asyncua server: the ten companion NodeSets, then ours."""

from __future__ import annotations

import logging
import time
from importlib import resources

from asyncua import Server

from opcua_model.nodesets import DI_URI, required_nodesets

log = logging.getLogger(__name__)

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
FARM_XML = "printfarm.xml"


def farm_xml() -> str:
    """Our own NodeSet2 XML (namespace FARM_URI)."""
    return (resources.files("opcua_model") / FARM_XML).read_text(encoding="utf-8")


async def load_model(server: Server) -> int:
    """Import every NodeSet our model needs into `server` and return our namespace index.

    The workarounds measured with asyncua 2.1: no automatic data type loading per file (Machinery
    Jobs fails it) but one `load_data_type_definitions()` at the end; DI without strict mode
    (nine of its objects have no parent and are skipped).
    """
    started = time.perf_counter()
    for nodeset in required_nodesets():
        await server.import_xml(xmlstring=nodeset.xml, strict_mode=nodeset.uri != DI_URI,
                                auto_load_definitions=False)
    await server.import_xml(xmlstring=farm_xml(), auto_load_definitions=False)
    await server.load_data_type_definitions()
    index: int = await server.get_namespace_index(FARM_URI)
    log.info("OPC UA model loaded in %.2f s", time.perf_counter() - started)
    return index
