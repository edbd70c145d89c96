"""Load the whole model into an asyncua server: the ten companion NodeSets, then ours."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from importlib import resources

from asyncua import Server

from mes.opcua_model.completion import default_data_types, parentless_objects
from mes.opcua_model.nodesets import DI_URI, required_nodesets

log = logging.getLogger(__name__)

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
FARM_XML = "printfarm.xml"


def farm_xml() -> str:
    """Our own NodeSet2 XML (namespace FARM_URI)."""
    return (resources.files("mes.opcua_model") / FARM_XML).read_text(encoding="utf-8")


# asyncua's importer logs dozens of known, harmless warnings for these NodeSets (DI's nine
# parentless objects, PADIM's Matrix values, a ProcessIrregularity name collision).
QUIET_LOGGERS = ("asyncua.common.xmlimporter", "asyncua.common.xmlparser", "asyncua.ua.uatypes",
                 "asyncua.common.structures104")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def load_model(server: Server) -> int:
    """Import every NodeSet our model needs into `server` and return our namespace index.

    The workarounds measured with asyncua 2.1: no automatic data type loading per file (Machinery
    Jobs fails it) but one `load_data_type_definitions()` at the end; DI without strict mode
    (nine of its objects have no parent and are skipped), then what the importer left out
    put back (mes/opcua_model/completion.py).
    """
    started = time.perf_counter()
    with _quiet():
        for nodeset in required_nodesets():
            await server.import_xml(xmlstring=nodeset.xml, strict_mode=nodeset.uri != DI_URI,
                                    auto_load_definitions=False)
        await server.import_xml(xmlstring=farm_xml(), auto_load_definitions=False)
        await server.load_data_type_definitions()
    default_data_types(server)
    di_xml = next(n.xml for n in required_nodesets() if n.uri == DI_URI)
    parentless_objects(server, di_xml, await server.get_namespace_index(DI_URI))
    index: int = await server.get_namespace_index(FARM_URI)
    log.info("OPC UA model loaded in %.2f s", time.perf_counter() - started)
    return index
