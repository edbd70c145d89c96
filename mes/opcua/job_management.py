"""Where the JobManagement objects (Machinery Jobs, OPC 40001-3) live in the farm's
namespace: the farm-wide one and each printer's."""

from __future__ import annotations

from asyncua import ua

# The farm-wide JobManagement (Machinery Jobs' JobManagementType) and its JobOrderControl.
FARM_JOB_MANAGEMENT = "PrintFarm/JobManagement"
FARM_JOB_ORDER_CONTROL = f"{FARM_JOB_MANAGEMENT}.JobOrderControl"
FARM_JOB_ORDER_RESULTS = f"{FARM_JOB_MANAGEMENT}.JobOrderResults"
# Each printer's own JobManagement, for the jobs of that printer (the AM type declares it
# as an AddIn of MachineryBuildingBlocks), relative to Printers/<id>.
PRINTER_JOB_MANAGEMENT = "MachineryBuildingBlocks/JobManagement"
JOB_MANAGEMENT_PARTS = ("JobOrderControl", "JobOrderResults")
# JobOrderControl's largest count of job orders (UInt16's largest: the farm bounds job
# orders by its users' quotas, not by a count).
MAX_JOB_ORDERS = 65_535


def printer_job_management(pid: str, part: str) -> str:
    """The path (in our namespace) of a printer's JobManagement part."""
    return f"Printers/{pid}/{PRINTER_JOB_MANAGEMENT}/{part}"


def printer_of_part(nodeid: ua.NodeId, part: str, farm_ns: int) -> str | None:
    """The printer whose JobManagement `part` (JobOrderControl or JobOrderResults) `nodeid`
    is, or None when it is no printer's."""
    ident, prefix = nodeid.Identifier, "Printers/"
    suffix = f"/{PRINTER_JOB_MANAGEMENT}/{part}"
    if (nodeid.NamespaceIndex != farm_ns or not isinstance(ident, str)
            or not ident.startswith(prefix) or not ident.endswith(suffix)):
        return None
    pid = ident[len(prefix):-len(suffix)]
    return pid or None
