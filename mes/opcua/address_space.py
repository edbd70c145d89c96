"""The farm's address space: printers as AdditiveManufacturingType machines, jobs, spools.

Every node id is a string in our namespace derived from our ids (`Printers/<id>/...`,
`Jobs/<id>/...`, `Filaments/<id>/...`): the same on every node and across restarts. Nodes are
created with batched AddNodes calls (asyncua's per-node helpers cost about 11 times more) and
values are written only when they changed. Each private value (a job's Owner and FileName, a
printer's CurrentJob/Owner) has its owner in `Privacy.owners`, changed with the value itself
(mes/opcua/privacy.py decides who may see it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua

from mes.opcua.farm_state import FarmState, PrinterView
from mes.opcua.fast_nodes import NodeWriter
from mes.opcua.item_states import item_state
from mes.opcua.job_management import (
    JOB_MANAGEMENT_PARTS,
    MAX_JOB_ORDERS,
    PRINTER_JOB_MANAGEMENT,
    printer_job_management,
)
from mes.opcua.job_responses import job_order_state
from mes.opcua.privacy import NOBODY, Privacy
from mes.opcua_model.loader import FARM_URI
from mes.opcua_model.nodesets import (
    AM_URI,
    DI_URI,
    ISA95_URI,
    MACHINERY_JOBS_URI,
    MACHINERY_URI,
)

log = logging.getLogger(__name__)

MACHINE_TOOL_URI = "http://opcfoundation.org/UA/MachineTool/"
# Printers per AddNodes call while building; the loop yields between calls.
BUILD_BATCH = 50
# Values per write batch; the loop yields between batches so publishing keeps up.
WRITE_BATCH = 400

UNITS_URI = "http://www.opcfoundation.org/UA/units/un/cefact"
CELSIUS = ua.EUInformation(NamespaceUri=UNITS_URI, UnitId=4408652,
                           DisplayName=ua.LocalizedText("°C"),
                           Description=ua.LocalizedText("degree Celsius"))
GRAM = ua.EUInformation(NamespaceUri=UNITS_URI, UnitId=4674125,
                        DisplayName=ua.LocalizedText("g"), Description=ua.LocalizedText("gram"))
PERCENT = ua.EUInformation(NamespaceUri=UNITS_URI, UnitId=20529,
                           DisplayName=ua.LocalizedText("%"),
                           Description=ua.LocalizedText("percent"))
SECOND = ua.EUInformation(NamespaceUri=UNITS_URI, UnitId=5457219,
                          DisplayName=ua.LocalizedText("s"),
                          Description=ua.LocalizedText("second"))
NOZZLE_RANGE = ua.Range(Low=0.0, High=350.0)
BED_RANGE = ua.Range(Low=0.0, High=150.0)

# MachineryItemState_StateMachineType's states (Machinery namespace).
ITEM_STATES = {"NotAvailable": 5005, "OutOfService": 5004, "Executing": 5006,
               "NotExecuting": 5007}
# MachineTool's ProductionProgramStateMachineType (OPC 40501-1, 8.4.10; the type of
# Production/ActiveProgram/State): its states' node ids in that namespace and their
# StateNumbers.
PROGRAM_STATES = {"Initializing": (5039, 0), "Running": (5041, 1), "Ended": (5038, 2),
                  "Interrupted": (5040, 3), "Aborted": (5037, 4)}

_I = ua.ObjectIds
_HAS_COMPONENT = ua.NodeId(_I.HasComponent)
_HAS_PROPERTY = ua.NodeId(_I.HasProperty)
_ORGANIZES = ua.NodeId(_I.Organizes)
_HAS_ADD_IN = ua.NodeId(_I.HasAddIn)
_READ = ua.AccessLevel.CurrentRead.mask
_HISTORY = ua.AccessLevel.HistoryRead.mask


@dataclass(frozen=True)
class Namespaces:
    """Namespace indexes of the models the farm uses (resolved by URI after loading)."""

    farm: int
    di: int
    machinery: int
    machine_tool: int
    am: int
    jobs: int  # Machinery Jobs (OPC 40001-3)
    isa95: int  # ISA-95 Job Control

    @classmethod
    async def resolve(cls, server: Server) -> Namespaces:
        """Look every namespace index up by its URI."""
        index = server.get_namespace_index
        return cls(await index(FARM_URI), await index(DI_URI), await index(MACHINERY_URI),
                   await index(MACHINE_TOOL_URI), await index(AM_URI),
                   await index(MACHINERY_JOBS_URI), await index(ISA95_URI))




# The feedstock a printer without a spool shows (FeedstockListType's `<Feedstock>` is a
# MandatoryPlaceholder): Identifier empty, Name "none", RemainingQuantity 0 g.
NO_SPOOL = "NoSpool"
# Data types of JobOrderControl's variables (ISA-95 Job Control namespace).
_ISA95_JOB_ORDER_AND_STATE = 3015
_ISA95_WORK_MASTER = 3007


# ---------------------------------------------------------------------------- node building

# A value as plain data (its type and Python value): cheap to build and compare each pass;
# turned into a Variant only when it is written.
# A third member, when present, is the value's StatusCode (a printer's telemetry while the
# printer is offline or never seen): part of the comparison, so a change of quality alone is
# written too.
Plain = tuple[ua.VariantType, Any] | tuple[ua.VariantType, Any, int]
# The value nodes of a printer, relative to Printers/<id>, in the order _printer_values uses.
PRINTER_VALUES = (
    "Identification/Manufacturer", "Identification/Model", "Identification/SerialNumber",
    "Identification/ProductInstanceUri", "Identification/AMTechnologyIdentifier",
    "MachineryItemState/CurrentState", "MachineryItemState/CurrentState/Id",
    "Production/ActiveProgram/Name", "Production/ActiveProgram/State/CurrentState",
    "Production/ActiveProgram/State/CurrentState/Id",
    "Production/ActiveProgram/State/CurrentState/Number", "State", "NozzleTemperature",
    "NozzleTargetTemperature",
    "BedTemperature", "BedTargetTemperature", "BedClear", "CurrentJob/JobId",
    "CurrentJob/Progress", "CurrentJob/TimePrinted", "CurrentJob/TimeLeft", "CurrentJob/Owner",
    f"{PRINTER_JOB_MANAGEMENT}/JobOrderControl/MaterialDefinitionID",
    f"{PRINTER_JOB_MANAGEMENT}/JobOrderControl/MaterialClassID",
)
_CURRENT_OWNER = PRINTER_VALUES.index("CurrentJob/Owner")
# What the printer itself reports (Good while it answers; see _quality); their
# SourceTimestamp is the poll that saw the value.
TELEMETRY = ("NozzleTemperature", "NozzleTargetTemperature", "BedTemperature",
             "BedTargetTemperature")
_TELEMETRY = frozenset(PRINTER_VALUES.index(name) for name in TELEMETRY)
_GOOD = ua.StatusCodes.Good
_OFFLINE_LAST = ua.StatusCodes.UncertainLastUsableValue
_OFFLINE = ua.StatusCodes.BadCommunicationError
_NEVER_SEEN = ua.StatusCodes.BadWaitingForInitialData
# A value to write: a Variant (Good, timestamps of the write) or a whole DataValue.
Change = tuple[ua.NodeId, ua.Variant | ua.DataValue]
# A private node -> who may read it (NOBODY: staff only; None: nothing private shown now).
Owners = dict[ua.NodeId, str | None]


def data_value(plain: Plain, source: datetime | None) -> ua.DataValue:
    """The DataValue a plain value with a StatusCode or a source time is written as."""
    status = plain[2] if len(plain) == 3 else _GOOD
    return ua.DataValue(variant_of(plain), StatusCode=ua.StatusCode(status),
                        SourceTimestamp=source or datetime.now(UTC))  # ServerTimestamp: write


def variant_of(plain: Plain) -> ua.Variant:
    """The Variant a plain value is written as (None: a Null variant)."""
    vtype, value = plain[0], plain[1]
    if value is None:
        return ua.Variant(None, ua.VariantType.Null)
    if vtype == ua.VariantType.LocalizedText:
        return ua.Variant(ua.LocalizedText(value), vtype)
    return ua.Variant(value, vtype)


def _dtype(vtype: ua.VariantType) -> ua.NodeId:
    return ua.NodeId(vtype.value)


class _Items:
    """AddNodesItems for one object, and the ids it added (to delete it again)."""

    def __init__(self) -> None:
        self.items: list[ua.AddNodesItem] = []
        self.ids: list[ua.NodeId] = []

    def obj(self, parent: ua.NodeId, nodeid: ua.NodeId, name: ua.QualifiedName,
            typedef: ua.NodeId, ref: ua.NodeId = _HAS_COMPONENT,
            description: str = "", notifier: bool = False) -> ua.NodeId:
        attrs = ua.ObjectAttributes(DisplayName=ua.LocalizedText(name.Name),
                                    Description=ua.LocalizedText(description or name.Name),
                                    # SubscribeToEvents and HistoryRead (its past events)
                                    EventNotifier=5 if notifier else 0,
                                    WriteMask=0, UserWriteMask=0)
        self._add(parent, nodeid, name, ua.NodeClass.Object, typedef, ref, attrs)
        return nodeid

    def var(self, parent: ua.NodeId, nodeid: ua.NodeId, name: ua.QualifiedName,
            value: ua.Variant, datatype: ua.NodeId, *, prop: bool = False,
            typedef: int | ua.NodeId = _I.BaseDataVariableType, description: str = "",
            history: bool = False, array: bool = False) -> ua.NodeId:
        """A variable; `history`: HistoryRead serves its past (mes.opcua.history);
        `array`: a one-dimensional array."""
        level = _READ | (_HISTORY if history else 0)
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(name.Name),
            Description=ua.LocalizedText(description or name.Name), Value=value,
            DataType=datatype,
            ValueRank=ua.ValueRank.OneDimension if array else ua.ValueRank.Scalar,
            ArrayDimensions=[0] if array else None,
            AccessLevel=level, UserAccessLevel=level, Historizing=history,
            WriteMask=0, UserWriteMask=0, MinimumSamplingInterval=0.0)
        tdef = ua.NodeId(_I.PropertyType) if prop else (
            typedef if isinstance(typedef, ua.NodeId) else ua.NodeId(typedef))
        self._add(parent, nodeid, name, ua.NodeClass.Variable, tdef,
                  _HAS_PROPERTY if prop else _HAS_COMPONENT, attrs)
        return nodeid

    def _add(self, parent: ua.NodeId, nodeid: ua.NodeId, name: ua.QualifiedName,
             node_class: ua.NodeClass, typedef: ua.NodeId, ref: ua.NodeId, attrs: Any) -> None:
        self.items.append(ua.AddNodesItem(
            ParentNodeId=parent, ReferenceTypeId=ref, RequestedNewNodeId=nodeid,
            BrowseName=name, NodeClass=node_class, NodeAttributes=attrs, TypeDefinition=typedef))
        self.ids.append(nodeid)


def printer_state(view: PrinterView) -> str:
    """The farm's printer state: the last status seen (offline before any)."""
    return str(view.status["state"]) if view.status else "offline"


def machinery_state(view: PrinterView) -> str:
    """MachineryItemState derived from the printer's state (as its history is)."""
    reported = str(view.status["state"]) if view.status else None
    return item_state(reported, bool(view.printer.get("attention")))


def program_state(view: PrinterView) -> str | None:
    """The state of the printer's ActiveProgram (its current job, or the one whose part
    waits on the bed): its ISA-95 job order state, a queued job (claimed, being sent to
    the printer) Initializing; None without a job."""
    if view.job is None:
        return None
    state = job_order_state(view.job, printer_state(view))
    return "Initializing" if state in ("NotAllowedToStart", "AllowedToStart") else state


def _num(row: dict[str, Any] | None, key: str) -> float | None:
    value = row.get(key) if row else None
    return float(value) if value is not None else None


def feedstock_name(spool: dict[str, Any]) -> str:
    """A spool's FeedstockType Name, e.g. PLA_black."""
    return f"{spool['type']}_{spool['color']}"


class AddressSpace:
    """Creates, updates and removes the farm's nodes in one asyncua server."""

    def __init__(self, server: Server, ns: Namespaces, fast: bool = True) -> None:
        self.server = server
        self.ns = ns
        # Write NodeData directly (mes/opcua/fast_nodes.py) instead of asyncua's AddNodes.
        self._writer = NodeWriter(server) if fast else None
        self.printers_folder = self.id("PrintFarm/Printers")
        self.jobs_folder = self.id("PrintFarm/Jobs")
        self.filaments_folder = self.id("PrintFarm/Filaments")
        self.machines_folder = ua.NodeId(1001, ns.machinery)
        # What exists: object id -> every node id it added; and the last value of each node.
        self._printers: dict[str, list[ua.NodeId]] = {}
        self._printer_names: dict[str, str] = {}
        self._spools: dict[str, tuple[str, list[ua.NodeId]]] = {}
        self._jobs: dict[str, list[ua.NodeId]] = {}
        self._filaments: dict[str, list[ua.NodeId]] = {}
        self._values: dict[ua.NodeId, Plain] = {}  # what each value node shows
        self.privacy = Privacy.of(server)
        # New owners of private nodes whose new value is still to be written.
        self._owner_after: Owners = {}
        # Node ids of each printer's values (PRINTER_VALUES order), made once per printer.
        self._printer_value_ids: dict[str, tuple[ua.NodeId, ...]] = {}
        self._item_state_ids = {name: ua.NodeId(number, ns.machinery)
                                for name, number in ITEM_STATES.items()}
        self.node_count = 0
        self._refused: set[ua.NodeId] = set()  # nodes whose refused write was logged
        # Called with (printer node id, printer id) after a printer object was created.
        self.printer_hooks: list[Callable[[ua.NodeId, str], Awaitable[None]]] = []
        # The farm-wide methods each printer's JobOrderControl and JobOrderResults reference
        # (set before the first printer is made).
        self.job_methods: dict[str, tuple[ua.NodeId, ...]] = {}

    def id(self, path: str) -> ua.NodeId:
        """A node id in our namespace."""
        return ua.NodeId(path, self.ns.farm)

    def printer_node(self, printer_id: str) -> ua.NodeId:
        """The node id of a printer's machine object."""
        return self.id(f"Printers/{printer_id}")

    @property
    def printer_ids(self) -> set[str]:
        return set(self._printers)

    def loaded_spools(self) -> dict[str, str]:
        """Printer id -> id of the spool shown as its feedstock."""
        return {pid: sid for pid, (sid, _) in self._spools.items() if sid}

    @property
    def job_ids(self) -> set[str]:
        return set(self._jobs)

    @property
    def filament_ids(self) -> set[str]:
        return set(self._filaments)

    # -- printers

    def _q(self, ns: int, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, ns)

    def _printer_items(self, view: PrinterView) -> _Items:
        ns, pid = self.ns, view.id
        items = _Items()
        base = f"Printers/{pid}"
        root = items.obj(self.machines_folder, self.id(base), self._q(ns.farm, view.name),
                         ua.NodeId(1005, ns.am), _ORGANIZES, f"3D printer {pid}", notifier=True)
        ident = items.obj(root, self.id(f"{base}/Identification"),
                          self._q(ns.di, "Identification"), ua.NodeId(1004, ns.am), _HAS_ADD_IN)
        lt, s = ua.VariantType.LocalizedText, ua.VariantType.String
        for name, vns, vtype in (("Manufacturer", ns.di, lt), ("Model", ns.di, lt),
                                 ("SerialNumber", ns.di, s), ("ProductInstanceUri", ns.di, s),
                                 ("AMTechnologyIdentifier", ns.am, s)):
            items.var(ident, self.id(f"{base}/Identification/{name}"), self._q(vns, name),
                      ua.Variant(None), _dtype(vtype), prop=True)
        blocks = items.obj(root, self.id(f"{base}/MachineryBuildingBlocks"),
                           self._q(ns.machinery, "MachineryBuildingBlocks"),
                           ua.NodeId(_I.FolderType))
        self._job_management_items(items, blocks, pid)
        # OPC 40001-1: the building blocks are AddIns of the machine, and the folder
        # references them too (put_printers adds its HasAddIn references).
        states = items.obj(root, self.id(f"{base}/MachineryItemState"),
                               self._q(ns.machinery, "MachineryItemState"),
                               ua.NodeId(1002, ns.machinery), _HAS_ADD_IN)
        current = items.var(states, self.id(f"{base}/MachineryItemState/CurrentState"),
                            self._q(0, "CurrentState"), ua.Variant(None), _dtype(lt),
                            typedef=_I.FiniteStateVariableType, history=True)
        items.var(current, self.id(f"{base}/MachineryItemState/CurrentState/Id"),
                  self._q(0, "Id"), ua.Variant(None), ua.NodeId(_I.NodeId), prop=True)
        self._machine_tool_items(items, root, base)
        equipment = items.obj(root, self.id(f"{base}/Equipment"),
                              self._q(ns.machine_tool, "Equipment"), ua.NodeId(1003, ns.am))
        items.obj(equipment, self.id(f"{base}/Equipment/Feedstock"), self._q(ns.am, "Feedstock"),
                  ua.NodeId(1001, ns.am))
        self._farm_items(items, root, base)
        return items

    def _job_management_items(self, items: _Items, blocks: ua.NodeId, pid: str) -> None:
        """The printer's JobManagement (Machinery Jobs' JobManagementType, an AddIn of
        MachineryBuildingBlocks) with JobOrderControl's mandatory variables and
        JobOrderResults; their methods are the farm-wide ones, referenced (`_printer_refs`)
        and answered for this printer's jobs (mes.opcua.methods)."""
        ns = self.ns
        base = f"Printers/{pid}/{PRINTER_JOB_MANAGEMENT}"
        management = items.obj(blocks, self.id(base), self._q(ns.jobs, "JobManagement"),
                               ua.NodeId(1003, ns.jobs), _HAS_ADD_IN,
                               f"The job orders of printer {pid}")
        control = items.obj(management, self.id(f"{base}/JobOrderControl"),
                            self._q(ns.jobs, "JobOrderControl"), ua.NodeId(1002, ns.isa95))
        items.obj(management, self.id(f"{base}/JobOrderResults"),
                  self._q(ns.jobs, "JobOrderResults"), ua.NodeId(1003, ns.isa95))
        cbase, text = f"{base}/JobOrderControl", _dtype(ua.VariantType.String)
        current = items.var(control, self.id(f"{cbase}/CurrentState"), self._q(0, "CurrentState"),
                            ua.Variant(None), _dtype(ua.VariantType.LocalizedText),
                            typedef=_I.FiniteStateVariableType)
        items.var(current, self.id(f"{cbase}/CurrentState/Id"), self._q(0, "Id"),
                  ua.Variant(None), ua.NodeId(_I.NodeId), prop=True)
        strings = ua.VariantType.String
        for name, value, datatype in (
                ("EquipmentID", ua.Variant([pid], strings, is_array=True), text),
                ("JobOrderList", ua.Variant([], ua.VariantType.ExtensionObject, is_array=True),
                 ua.NodeId(_ISA95_JOB_ORDER_AND_STATE, ns.isa95)),
                ("MaterialClassID", ua.Variant([], strings, is_array=True), text),
                ("MaterialDefinitionID", ua.Variant([], strings, is_array=True), text),
                ("PersonnelID", ua.Variant([], strings, is_array=True), text),
                ("PhysicalAssetID", ua.Variant([], strings, is_array=True), text),
                ("WorkMaster", ua.Variant([], ua.VariantType.ExtensionObject, is_array=True),
                 ua.NodeId(_ISA95_WORK_MASTER, ns.isa95))):
            items.var(control, self.id(f"{cbase}/{name}"), self._q(ns.isa95, name), value,
                      datatype, typedef=_I.BaseDataVariableType, array=True)
        items.var(control, self.id(f"{cbase}/MaxDownloadableJobOrders"),
                  self._q(ns.isa95, "MaxDownloadableJobOrders"),
                  ua.Variant(MAX_JOB_ORDERS, ua.VariantType.UInt16),
                  _dtype(ua.VariantType.UInt16), prop=True)

    def _machine_tool_items(self, items: _Items, root: ua.NodeId, base: str) -> None:
        """MachineToolType's mandatory members (Monitoring, Notification, Production)."""
        mt = self.ns.machine_tool
        monitoring = items.obj(root, self.id(f"{base}/Monitoring"), self._q(mt, "Monitoring"),
                               ua.NodeId(14, mt))
        machine = items.obj(monitoring, self.id(f"{base}/Monitoring/MachineTool"),
                            self._q(mt, "MachineTool"), ua.NodeId(26, mt))
        items.var(machine, self.id(f"{base}/Monitoring/MachineTool/OperationMode"),
                  self._q(mt, "OperationMode"), ua.Variant(1, ua.VariantType.Int32),
                  ua.NodeId(65, mt))  # Automatic
        items.obj(root, self.id(f"{base}/Notification"), self._q(mt, "Notification"),
                  ua.NodeId(7, mt))
        production = items.obj(root, self.id(f"{base}/Production"), self._q(mt, "Production"),
                               ua.NodeId(21, mt))
        program = items.obj(production, self.id(f"{base}/Production/ActiveProgram"),
                            self._q(mt, "ActiveProgram"), ua.NodeId(32, mt))
        items.var(program, self.id(f"{base}/Production/ActiveProgram/Name"), self._q(mt, "Name"),
                  ua.Variant(None), _dtype(ua.VariantType.String), prop=True)
        items.var(program, self.id(f"{base}/Production/ActiveProgram/NumberInList"),
                  self._q(0, "NumberInList"), ua.Variant(0, ua.VariantType.UInt16),
                  _dtype(ua.VariantType.UInt16), prop=True)
        state = items.obj(program, self.id(f"{base}/Production/ActiveProgram/State"),
                          self._q(mt, "State"), ua.NodeId(15, mt))
        state_path = f"{base}/Production/ActiveProgram/State/CurrentState"
        current = items.var(state, self.id(state_path),
                            self._q(0, "CurrentState"), ua.Variant(None),
                            _dtype(ua.VariantType.LocalizedText),
                            typedef=_I.FiniteStateVariableType)
        for name, vtype in (("Id", ua.VariantType.NodeId), ("Number", ua.VariantType.UInt32)):
            items.var(current, self.id(f"{state_path}/{name}"),
                      self._q(0, name), ua.Variant(None), _dtype(vtype), prop=True)

    def _analog(self, items: _Items, parent: ua.NodeId, path: str, name: str, unit: Any,
                eu_range: ua.Range | None, description: str, ns: int | None = None) -> None:
        ns = self.ns.farm if ns is None else ns
        typedef = _I.AnalogItemType if eu_range is not None else _I.AnalogUnitType
        var = items.var(parent, self.id(path), self._q(ns, name), ua.Variant(None),
                        _dtype(ua.VariantType.Double), typedef=typedef, description=description)
        items.var(var, self.id(f"{path}/EngineeringUnits"), self._q(0, "EngineeringUnits"),
                  ua.Variant(unit, ua.VariantType.ExtensionObject),
                  ua.NodeId(_I.EUInformation), prop=True)
        if eu_range is not None:
            items.var(var, self.id(f"{path}/EURange"), self._q(0, "EURange"),
                      ua.Variant(eu_range, ua.VariantType.ExtensionObject),
                      ua.NodeId(_I.Range), prop=True)

    def _farm_items(self, items: _Items, root: ua.NodeId, base: str) -> None:
        """Our own nodes under a printer: state, temperatures, current job."""
        farm = self.ns.farm
        s = _dtype(ua.VariantType.String)
        items.var(root, self.id(f"{base}/State"), self._q(farm, "State"), ua.Variant(None), s,
                  description="offline, idle, printing, paused, finished or error")
        for name, rng, what in (("NozzleTemperature", NOZZLE_RANGE, "Nozzle temperature"),
                                ("NozzleTargetTemperature", NOZZLE_RANGE, "Nozzle target"),
                                ("BedTemperature", BED_RANGE, "Bed temperature"),
                                ("BedTargetTemperature", BED_RANGE, "Bed target")):
            self._analog(items, root, f"{base}/{name}", name, CELSIUS, rng, what)
        items.var(root, self.id(f"{base}/BedClear"), self._q(farm, "BedClear"),
                  ua.Variant(None), _dtype(ua.VariantType.Boolean),
                  description="False while a finished print waits to be taken off the bed")
        job = items.obj(root, self.id(f"{base}/CurrentJob"), self._q(farm, "CurrentJob"),
                        ua.NodeId(1003, farm))
        items.var(job, self.id(f"{base}/CurrentJob/JobId"), self._q(farm, "JobId"),
                  ua.Variant(None), s)
        self._analog(items, job, f"{base}/CurrentJob/Progress", "Progress", PERCENT,
                     ua.Range(Low=0.0, High=100.0), "Progress in percent")
        for name in ("TimePrinted", "TimeLeft"):
            self._analog(items, job, f"{base}/CurrentJob/{name}", name, SECOND, None,
                         f"{name} in seconds")
        items.var(job, self.id(f"{base}/CurrentJob/Owner"), self._q(farm, "Owner"),
                  ua.Variant(None), s)

    def _spool_items(self, pid: str, spool: dict[str, Any] | None) -> _Items:
        """The spool a printer holds, or NO_SPOOL: FeedstockListType's `<Feedstock>` is a
        MandatoryPlaceholder, so a printer without a spool still shows one instance."""
        ns = self.ns
        items = _Items()
        name = str(spool["id"]) if spool else NO_SPOOL
        base = f"Printers/{pid}/Feedstock/{name}"
        obj = items.obj(self.id(f"Printers/{pid}/Equipment/Feedstock"), self.id(base),
                        self._q(ns.am, name), ua.NodeId(1000, ns.am),
                        description=f"Filament spool {name}" if spool
                        else "No filament spool is loaded")
        s = _dtype(ua.VariantType.String)
        items.var(obj, self.id(f"{base}/Identifier"), self._q(ns.am, "Identifier"),
                  ua.Variant(None), s, prop=True)
        items.var(obj, self.id(f"{base}/Name"), self._q(ns.am, "Name"), ua.Variant(None), s,
                  prop=True)
        self._analog(items, obj, f"{base}/RemainingQuantity", "RemainingQuantity", GRAM, None,
                     "Filament left on the spool", ns.am)
        return items

    def _printer_values(self, view: PrinterView) -> dict[ua.NodeId, Plain]:
        p, st, job, sp = view.printer, view.status, view.job, view.spool
        lt, s, d = ua.VariantType.LocalizedText, ua.VariantType.String, ua.VariantType.Double
        machinery = machinery_state(view)
        plain: tuple[Plain, ...] = (  # in the order of PRINTER_VALUES
            (lt, p.get("company") or ""),
            (lt, p.get("model") or ""),
            (s, view.id),
            (s, f"urn:mes:printer:{view.id}"),
            (s, "MEX"),
            (lt, machinery),
            (ua.VariantType.NodeId, self._item_state_ids[machinery]),
            (s, job.get("printer_filename") if job else None),
            *self._program(program_state(view)),
            (s, printer_state(view)),
            (d, _num(st, "nozzle_actual")),
            (d, _num(st, "nozzle_target")),
            (d, _num(st, "bed_actual")),
            (d, _num(st, "bed_target")),
            (ua.VariantType.Boolean, bool(p.get("bed_clear"))),
            (s, job["id"] if job else ""),
            (d, _progress(job, st)),
            (d, (_num(st, "time_printed") or 0.0) if job else 0.0),
            (d, (_num(st, "time_left") or 0.0) if job else 0.0),
            (s, (job.get("owner_id") or "") if job else ""),
            (s, [str(sp["id"])] if sp else []),  # what job orders here may name: the spool
            (s, [str(sp["type"])] if sp and sp.get("type") else []),
        )
        ids = self._printer_value_ids.get(view.id)
        if ids is None:
            base = f"Printers/{view.id}"
            ids = self._printer_value_ids[view.id] = tuple(
                self.id(f"{base}/{key}") for key in PRINTER_VALUES)
        if st is None or st.get("state") == "offline":
            plain = tuple(self._quality(ids[i], value, st is None) if i in _TELEMETRY else value
                          for i, value in enumerate(plain))
        found = dict(zip(ids, plain, strict=True))
        sbase = f"Printers/{view.id}/Feedstock/{sp['id'] if sp else NO_SPOOL}"
        found[self.id(f"{sbase}/Identifier")] = (s, str(sp["id"]) if sp else "")
        found[self.id(f"{sbase}/Name")] = (s, feedstock_name(sp) if sp else "none")
        found[self.id(f"{sbase}/RemainingQuantity")] = (
            d, float(sp["remaining_weight_in_grams"]) if sp else 0.0)
        return found

    # -- jobs and spools

    def _job_items(self, job: dict[str, Any]) -> _Items:
        farm = self.ns.farm
        items = _Items()
        base = f"Jobs/{job['id']}"
        obj = items.obj(self.jobs_folder, self.id(base), self._q(farm, str(job["id"])),
                        ua.NodeId(1004, farm), _ORGANIZES, f"Print job {job['id']}")
        for name in ("Status", "PrinterId", "FilamentId", "Owner", "FileName"):
            items.var(obj, self.id(f"{base}/{name}"), self._q(farm, name), ua.Variant(None),
                      _dtype(ua.VariantType.String), history=name == "Status")
        return items

    def _program(self, state: str | None) -> tuple[Plain, Plain, Plain]:
        """ActiveProgram/State/CurrentState and its Id and Number."""
        if state is None:
            return ((ua.VariantType.LocalizedText, None), (ua.VariantType.NodeId, None),
                    (ua.VariantType.UInt32, None))
        number, state_number = PROGRAM_STATES[state]
        return ((ua.VariantType.LocalizedText, state),
                (ua.VariantType.NodeId, ua.NodeId(number, self.ns.machine_tool)),
                (ua.VariantType.UInt32, state_number))

    def _quality(self, nid: ua.NodeId, plain: Plain, never_seen: bool) -> Plain:
        """A telemetry value of a printer that does not answer: Bad_WaitingForInitialData
        before its first status; offline, the last value shown with
        Uncertain_LastUsableValue, or Bad_CommunicationError when there is none."""
        vtype = plain[0]
        if never_seen:
            return (vtype, None, _NEVER_SEEN)
        last = self._values.get(nid)
        if last is not None and last[1] is not None:
            return (vtype, last[1], _OFFLINE_LAST)
        return (vtype, None, _OFFLINE)

    def stamps(self, view: PrinterView) -> tuple[frozenset[ua.NodeId], datetime | None]:
        """The printer's telemetry nodes and the time of the poll its status comes from."""
        ids = self._printer_value_ids.get(view.id)
        observed = (view.status or {}).get("observed_at")
        when = datetime.fromtimestamp(float(observed), UTC) if observed is not None else None
        if ids is None:
            return frozenset(), when
        return frozenset(ids[i] for i in _TELEMETRY), when

    def _printer_owners(self, view: PrinterView) -> Owners:
        """Who may read the printer's CurrentJob/Owner (after `_printer_values`)."""
        job = view.job
        owner = str(job.get("owner_id") or NOBODY) if job else None
        return {self._printer_value_ids[view.id][_CURRENT_OWNER]: owner}

    def _job_owners(self, job: dict[str, Any]) -> Owners:
        """Who may read the job's Owner and FileName: its owner."""
        owner, base = str(job.get("owner_id") or NOBODY), f"Jobs/{job['id']}"
        return {self.id(f"{base}/Owner"): owner, self.id(f"{base}/FileName"): owner}

    def _job_values(self, job: dict[str, Any]) -> dict[ua.NodeId, Plain]:
        s, base = ua.VariantType.String, f"Jobs/{job['id']}"
        values = {"Status": job["status"],
                  "PrinterId": job.get("assigned_printer_id") or job.get("printer_id") or "",
                  "FilamentId": job.get("filament_id") or "", "Owner": job.get("owner_id") or "",
                  "FileName": job.get("filepath") or ""}
        return {self.id(f"{base}/{k}"): (s, str(v)) for k, v in values.items()}

    def _filament_items(self, spool: dict[str, Any]) -> _Items:
        farm = self.ns.farm
        items = _Items()
        base = f"Filaments/{spool['id']}"
        obj = items.obj(self.filaments_folder, self.id(base), self._q(farm, str(spool["id"])),
                        ua.NodeId(1005, farm), _ORGANIZES, f"Filament spool {spool['id']}")
        self._analog(items, obj, f"{base}/RemainingWeight", "RemainingWeight", GRAM, None,
                     "Grams left on the spool")
        self._analog(items, obj, f"{base}/TotalWeight", "TotalWeight", GRAM, None,
                     "Grams on a full spool")
        for name in ("Material", "Color"):
            items.var(obj, self.id(f"{base}/{name}"), self._q(farm, name), ua.Variant(None),
                      _dtype(ua.VariantType.String))
        return items

    def _filament_values(self, spool: dict[str, Any]) -> dict[ua.NodeId, Plain]:
        d, s, base = ua.VariantType.Double, ua.VariantType.String, f"Filaments/{spool['id']}"
        return {self.id(f"{base}/RemainingWeight"): (d, float(spool["remaining_weight_in_grams"])),
                self.id(f"{base}/TotalWeight"): (d, float(spool["total_weight_in_grams"])),
                self.id(f"{base}/Material"): (s, str(spool["type"])),
                self.id(f"{base}/Color"): (s, str(spool["color"]))}

    # -- applying changes

    async def _add(self, items: list[ua.AddNodesItem]) -> None:
        if not items:
            return
        if self._writer is not None:
            self._writer.add(items)
            self.node_count += len(items)
            return
        results = await self.server.iserver.isession.add_nodes(items)
        for item, result in zip(items, results, strict=True):
            if not result.StatusCode.is_good():
                raise RuntimeError(f"adding {item.RequestedNewNodeId.to_string()} failed: "
                                   f"{result.StatusCode}")
        self.node_count += len(items)

    async def _delete(self, ids: list[ua.NodeId]) -> None:
        """Delete nodes `_add` made (a job's, a spool's) with the references to them."""
        if not ids:
            return
        if self._writer is not None:
            self._writer.delete(ids, self.server.iserver.node_mgt_service)
        else:
            params = ua.DeleteNodesParameters(NodesToDelete=[
                ua.DeleteNodesItem(NodeId=nid, DeleteTargetReferences=True) for nid in ids])
            await self.server.iserver.isession.delete_nodes(params)
        self._forget(ids)
        self.node_count -= len(ids)

    def _forget(self, ids: Iterable[ua.NodeId]) -> None:
        owners = self.privacy.owners
        for nid in ids:
            self._values.pop(nid, None)
            owners.pop(nid, None)
            self._owner_after.pop(nid, None)

    def _prefill(self, items: list[ua.AddNodesItem], values: dict[ua.NodeId, Plain]) -> None:
        """Give new nodes their values at creation (no separate write); a value with a
        StatusCode of its own is written after (AddNodes carries no StatusCode)."""
        for item in items:
            plain = values.get(item.RequestedNewNodeId)
            if plain is not None and len(plain) == 2:
                del values[item.RequestedNewNodeId]
                item.NodeAttributes.Value = variant_of(plain)
                self._values[item.RequestedNewNodeId] = plain

    def _stage(self, values: dict[ua.NodeId, Plain], out: list[Change],
               owners: Owners | None = None,
               stamped: tuple[frozenset[ua.NodeId], datetime | None] | None = None) -> None:
        """Queue the values that differ from those shown (compared as plain data: a Variant
        is built only for a value that changed). `owners` of private nodes take effect with
        their value's write; at once for new nodes and unchanged values. `stamped`: nodes
        whose SourceTimestamp is the given time (the printer's poll), not the write's."""
        shown = self._values
        nodes, when = stamped if stamped is not None else (frozenset(), None)
        for nid, plain in values.items():
            if shown.get(nid) != plain:
                shown[nid] = plain
                if len(plain) == 2 and (when is None or nid not in nodes):
                    out.append((nid, variant_of(plain)))
                else:
                    out.append((nid, data_value(plain, when if nid in nodes else None)))
                if owners and nid in owners:
                    self._owner_after[nid] = owners.pop(nid)
        if owners:
            for nid in owners:
                self._owner_after.pop(nid, None)
            self.privacy.owners.update(owners)

    async def write(self, changes: list[Change]) -> None:
        """Write values in batches, yielding to the event loop between batches."""
        aspace = self.server.iserver.aspace
        pending, owners = self._owner_after, self.privacy.owners
        for start in range(0, len(changes), WRITE_BATCH):
            now = datetime.now(UTC)  # the ServerTimestamp (and the SourceTimestamp of ours)
            for nid, value in changes[start:start + WRITE_BATCH]:
                if pending and nid in pending:  # with its value: write_attribute_value
                    owners[nid] = pending.pop(nid)  # stores it before its first await
                if isinstance(value, ua.DataValue):
                    value.ServerTimestamp = now
                    data = value
                else:
                    data = ua.DataValue(value, SourceTimestamp=now, ServerTimestamp=now)
                if data.Value is not None and data.Value.VariantType == ua.VariantType.Null:
                    # No value: asyncua refuses a Null Variant for a node that held a typed
                    # one (the old value stayed, shown as Good); a DataValue without one
                    # passes and reads as Null.
                    data.Value = None
                written = await aspace.write_attribute_value(nid, ua.AttributeIds.Value, data)
                if not written.is_good() and nid not in self._refused:
                    self._refused.add(nid)
                    log.warning("OPC UA: the value of %s was not written: %s",
                                nid.to_string(), written.name)
            await asyncio.sleep(0)

    async def put_printers(self, views: Iterable[PrinterView]) -> list[Change]:
        """Create or update printers; returns the value writes still to be done."""
        pending: list[ua.AddNodesItem] = []
        refs: list[ua.AddReferencesItem] = []
        changes: list[Change] = []
        added: list[str] = []
        count = 0
        for view in views:
            pid = view.id
            values = self._printer_values(view)
            owners = self._printer_owners(view)
            if pid not in self._printers:
                items = self._printer_items(view)
                self._printers[pid] = items.ids
                self._printer_names[pid] = view.name
                self._prefill(items.items, values)
                pending.extend(items.items)
                added.append(pid)
                refs.append(self._farm_view_ref(pid))
                refs.extend(self._printer_refs(pid))
                self.privacy.owners[self.id(
                    printer_job_management(pid, "JobOrderControl/JobOrderList"))] = NOBODY
                count += 1
            elif self._printer_names[pid] != view.name:
                self._printer_names[pid] = view.name
                await self._rename(pid, view.name)
            spool_items = await self._put_spool(pid, view.spool)
            self._prefill(spool_items, values)
            pending.extend(spool_items)
            self._stage(values, changes, owners, self.stamps(view))
            if count >= BUILD_BATCH:
                await self._flush(pending, refs, added)
                count = 0
        await self._flush(pending, refs, added)
        return changes

    def _printer_refs(self, pid: str) -> list[ua.AddReferencesItem]:
        """MachineryBuildingBlocks' HasAddIn references to the printer's building blocks,
        and their inverses (asyncua adds only the direction it is given); and the
        references of its JobManagement to the farm-wide methods (forward only: a method
        shared by every printer lists none of them)."""
        base = f"Printers/{pid}"
        folder = self.id(f"{base}/MachineryBuildingBlocks")
        refs = []
        for block in ("Identification", "MachineryItemState"):
            target = self.id(f"{base}/{block}")
            refs += [ua.AddReferencesItem(SourceNodeId=source, ReferenceTypeId=_HAS_ADD_IN,
                                          IsForward=forward, TargetNodeId=other,
                                          TargetNodeClass=ua.NodeClass.Object)
                     for source, other, forward in ((folder, target, True),
                                                    (target, folder, False))]
        return refs + self._shared_method_refs(pid)

    def _shared_method_refs(self, pid: str) -> list[ua.AddReferencesItem]:
        return [ua.AddReferencesItem(
                    SourceNodeId=self.id(printer_job_management(pid, part)),
                    ReferenceTypeId=_HAS_COMPONENT, IsForward=True, TargetNodeId=method,
                    TargetNodeClass=ua.NodeClass.Method)
                for part in JOB_MANAGEMENT_PARTS for method in self.job_methods.get(part, ())]

    def _farm_view_ref(self, pid: str) -> ua.AddReferencesItem:
        return ua.AddReferencesItem(
            SourceNodeId=self.printers_folder, ReferenceTypeId=_ORGANIZES, IsForward=True,
            TargetNodeId=self.printer_node(pid), TargetNodeClass=ua.NodeClass.Object)

    async def _flush(self, pending: list[ua.AddNodesItem], refs: list[ua.AddReferencesItem],
                     added: list[str]) -> None:
        await self._add(pending)
        if refs:
            await self.server.iserver.isession.add_references(refs)
        for pid in added:
            for hook in self.printer_hooks:
                await hook(self.printer_node(pid), pid)
        pending.clear()
        refs.clear()
        added.clear()
        await asyncio.sleep(0)

    async def _rename(self, pid: str, name: str) -> None:
        aspace = self.server.iserver.aspace
        nid = self.printer_node(pid)
        await aspace.write_attribute_value(nid, ua.AttributeIds.BrowseName, ua.DataValue(
            ua.Variant(ua.QualifiedName(name, self.ns.farm), ua.VariantType.QualifiedName)))
        await aspace.write_attribute_value(nid, ua.AttributeIds.DisplayName, ua.DataValue(
            ua.Variant(ua.LocalizedText(name), ua.VariantType.LocalizedText)))
        # The farm view's reference keeps the name it was made with: make it again.
        session = self.server.iserver.isession
        await session.delete_references([ua.DeleteReferencesItem(
            SourceNodeId=self.printers_folder, ReferenceTypeId=_ORGANIZES, IsForward=True,
            TargetNodeId=nid, DeleteBidirectional=False)])
        await session.add_references([self._farm_view_ref(pid)])

    async def _put_spool(self, pid: str, spool: dict[str, Any] | None
                         ) -> list[ua.AddNodesItem]:
        loaded = self._spools.get(pid)
        wanted = str(spool["id"]) if spool else ""  # "": NO_SPOOL
        if loaded is not None and loaded[0] == wanted:
            return []
        if loaded:
            await self._delete(loaded[1])
            del self._spools[pid]
        items = self._spool_items(pid, spool)
        self._spools[pid] = (wanted, items.ids)
        return items.items

    async def drop_printer(self, pid: str) -> None:
        """Remove a printer and everything under it."""
        ids = self._printers.pop(pid, None)
        self._printer_names.pop(pid, None)
        self._printer_value_ids.pop(pid, None)
        spool = self._spools.pop(pid, None)
        if spool:
            await self._delete(spool[1])
        if ids:
            # The farm-wide methods its JobManagement references are not its own: their
            # references go first, so the recursive delete below leaves the methods.
            session = self.server.iserver.isession
            await session.delete_references([ua.DeleteReferencesItem(
                SourceNodeId=ref.SourceNodeId, ReferenceTypeId=_HAS_COMPONENT, IsForward=True,
                TargetNodeId=ref.TargetNodeId, DeleteBidirectional=False)
                for ref in self._shared_method_refs(pid)])
            # Also whatever others added under the printer (its methods).
            root = self.server.get_node(self.printer_node(pid))
            await self.server.delete_nodes([root], recursive=True)
            aspace = self.server.iserver.aspace
            left = [nid for nid in reversed(ids) if nid in aspace]
            self._forget(ids)
            self.node_count -= len(ids) - len(left)
            await self._delete(left)

    async def put_jobs(self, jobs: Iterable[dict[str, Any]]
                       ) -> list[Change]:
        """Create or update job objects; returns the value writes still to be done."""
        pending: list[ua.AddNodesItem] = []
        changes: list[Change] = []
        for job in jobs:
            if job["id"] not in self._jobs:
                items = self._job_items(job)
                self._jobs[job["id"]] = items.ids
                values = self._job_values(job)
                self._prefill(items.items, values)
                pending.extend(items.items)
            else:
                values = self._job_values(job)
            self._stage(values, changes, self._job_owners(job))
        await self._add(pending)
        return changes

    async def drop_job(self, job_id: str) -> None:
        """Remove a job object."""
        ids = self._jobs.pop(job_id, None)
        if ids:
            await self._delete(list(reversed(ids)))

    async def put_filaments(self, spools: Iterable[dict[str, Any]]
                            ) -> list[Change]:
        """Create or update spool objects; returns the value writes still to be done."""
        pending: list[ua.AddNodesItem] = []
        changes: list[Change] = []
        for spool in spools:
            if spool["id"] not in self._filaments:
                items = self._filament_items(spool)
                self._filaments[spool["id"]] = items.ids
                values = self._filament_values(spool)
                self._prefill(items.items, values)
                pending.extend(items.items)
            else:
                values = self._filament_values(spool)
            self._stage(values, changes)
        await self._add(pending)
        return changes

    async def drop_filament(self, spool_id: str) -> None:
        """Remove a spool object."""
        ids = self._filaments.pop(spool_id, None)
        if ids:
            await self._delete(list(reversed(ids)))

    async def clear(self) -> None:
        """Remove every farm node (before a rebuild from a restored snapshot)."""
        for pid in list(self._printers):
            await self.drop_printer(pid)
        for job_id in list(self._jobs):
            await self.drop_job(job_id)
        for spool_id in list(self._filaments):
            await self.drop_filament(spool_id)
        self._values.clear()
        self._printer_value_ids.clear()

    async def sync(self, state: FarmState) -> None:
        """Make the address space show `state`: add, update and remove what differs."""
        for pid in self.printer_ids - set(state.printers):
            await self.drop_printer(pid)
        for job_id in self.job_ids - set(state.jobs):
            await self.drop_job(job_id)
        for spool_id in self.filament_ids - set(state.filaments):
            await self.drop_filament(spool_id)
        changes = await self.put_filaments(state.filaments.values())
        changes += await self.put_jobs(state.jobs.values())
        changes += await self.put_printers(state.printers.values())
        await self.write(changes)


def _progress(job: dict[str, Any] | None, status: dict[str, Any] | None) -> float:
    """A running job's progress as the printer reports it; 100 for the finished job that
    waits on the bed; 0 otherwise."""
    if job is None:
        return 0.0
    if job.get("status") == "Done":
        return 100.0
    if job.get("status") == "Running":
        return _num(status, "progress") or 0.0
    return 0.0
