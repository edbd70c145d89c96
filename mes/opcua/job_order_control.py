"""JobOrderControl's mandatory variables (OPC 40001-3 JobManagement, ISA95JobOrderReceiver
ObjectType), filled from the replicated state.

- `JobOrderList`: the job orders not ended, oldest first, each with its ISA-95 state
  (NotAllowedToStart, AllowedToStart, Running, Interrupted), at most LISTED of them (the rest
  follow as earlier ones end; ended ones are read through JobOrderResults). Staff only: a
  user reads their own job orders through JobOrderResults, as REST shows them only theirs.
- `EquipmentID`: the printers' ids (what a job order's EquipmentRequirements may name);
  `MaterialDefinitionID`: the spools' ids, `MaterialClassID`: their materials (what
  MaterialRequirements may name); `PersonnelID`, `PhysicalAssetID`, `WorkMaster`: empty (no
  job order names them: a G-code file belongs to its uploader).
- `MaxDownloadableJobOrders`: 65,535 (UInt16's largest: the farm bounds job orders by its
  users' quotas, not by a count).
- `CurrentState`: the state the job order that changed last moved to.

Each printer's JobOrderControl (`MachineryBuildingBlocks/JobManagement`) shows the same for
that printer's job orders (assigned, or asked for while queued; at most PER_PRINTER listed):
its `JobOrderList` and `CurrentState` are written here when they changed, its
`EquipmentID` (the printer), `MaterialDefinitionID` and `MaterialClassID` (the spool it
holds) by the address space with the printer's other values.

Refreshed from the state (told by the mirror, which already hears every change) at most
once every REFRESH seconds after a job, printer or spool changed (a list of 1,000 job orders
is rebuilt whole), and every STATUS_REFRESH seconds while only printers' statuses changed (a
paused print is Interrupted): telemetry of 1,000 printers changes some status every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asyncua import Node, Server, ua
from sqlalchemy import Connection

from mes.opcua.job_management import MAX_JOB_ORDERS, printer_job_management
from mes.opcua.job_responses import JOB_ORDER_STATES, job_order, job_order_state, state_data
from mes.opcua.privacy import NOBODY, Privacy
from mes.state.opcua_reads import job_order_control, printer_job_orders

log = logging.getLogger(__name__)

LISTED = 1_000
PER_PRINTER = 100
REFRESH = 1.0
STATUS_REFRESH = 10.0
Reader = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


def job_order_list(jobs: list[Mapping[str, Any]], printer_states: Mapping[str, str]
                   ) -> list[ua.ISA95JobOrderAndStateDataType]:
    """The JobOrderList entries of `jobs`, in their order."""
    entries = []
    for job in jobs:
        printer_state = printer_states.get(str(job.get("assigned_printer_id") or ""))
        state = job_order_state(dict(job), printer_state)
        entries.append(ua.ISA95JobOrderAndStateDataType(JobOrder=job_order(dict(job)),
                                                        State=[state_data(state)]))
    return entries


class JobOrderControlValues:
    """Writes JobOrderControl's variables when the mirror notes a change (`noted`)."""

    def __init__(self, server: Server, control: ua.NodeId, read: Reader,
                 privacy: Privacy) -> None:
        self.server = server
        self.control = control
        self._read = read
        self._dirty = asyncio.Event()
        self._dirty.set()  # the first refresh fills them
        self.refreshes = 0
        self._statuses_changed = False
        self.current: str | None = None  # the state the last changed job order moved to
        self.current_of: dict[str, str] = {}  # the same, per printer
        # What each printer's JobOrderList and CurrentState show (to write only changes).
        self._listed: dict[str, tuple[tuple[Any, ...], ...]] = {}
        self._current_shown: dict[str, str] = {}
        privacy.owners[self._variable("JobOrderList").nodeid] = NOBODY

    def noted(self, structural: bool) -> None:
        """The mirror noted a change (on the server's loop): a printer, job or spool
        (`structural`), or only printers' statuses."""
        if structural:
            self._dirty.set()
        else:
            self._statuses_changed = True

    def moved(self, state: str, printer: str | None = None) -> None:
        """A job order (of `printer`) moved to `state` (from the mirror's events)."""
        if state in JOB_ORDER_STATES:
            self.current = state
            if printer:
                self.current_of[printer] = state
            self._dirty.set()

    async def run(self) -> None:
        """Refresh whenever something changed, at most once every REFRESH seconds."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATUS_REFRESH):
                    await self._dirty.wait()
            if not (self._dirty.is_set() or self._statuses_changed):
                continue
            self._dirty.clear()
            self._statuses_changed = False
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("JobOrderControl's variables could not be refreshed")
            await asyncio.sleep(REFRESH)  # a pace, not a wait for a state

    async def refresh(self) -> None:
        """Read the state and write every variable."""
        found, per_printer = await self._read(lambda conn: (
            job_order_control(conn, LISTED), printer_job_orders(conn, PER_PRINTER)))
        text, structure = ua.VariantType.String, ua.VariantType.ExtensionObject
        values: dict[str, ua.Variant] = {
            "JobOrderList": ua.Variant(job_order_list(found["jobs"], found["printer_states"]),
                                       structure, is_array=True),
            "EquipmentID": ua.Variant([str(p) for p in found["printers"]], text,
                                      is_array=True),
            "MaterialDefinitionID": ua.Variant([str(s) for s, _ in found["spools"]], text,
                                               is_array=True),
            "MaterialClassID": ua.Variant(sorted({str(t) for _, t in found["spools"]}), text,
                                          is_array=True),
            "PersonnelID": ua.Variant([], text, is_array=True),
            "PhysicalAssetID": ua.Variant([], text, is_array=True),
            "WorkMaster": ua.Variant([], structure, is_array=True),
            "MaxDownloadableJobOrders": ua.Variant(MAX_JOB_ORDERS, ua.VariantType.UInt16),
        }
        for name, variant in values.items():
            await self._variable(name).write_value(ua.DataValue(variant))
        if self.current is not None:
            await self._write_current(self.current)
        await self._refresh_printers(per_printer["jobs"], per_printer["printer_states"])
        self.refreshes += 1

    async def _refresh_printers(self, jobs: dict[str, list[Mapping[str, Any]]],
                                printer_states: Mapping[str, str]) -> None:
        """Write the JobOrderList and CurrentState of each printer whose own changed (a
        printer whose nodes do not exist yet is written at a later refresh)."""
        aspace = self.server.iserver.aspace
        value = ua.AttributeIds.Value
        for pid in sorted(set(jobs) | set(self._listed)):
            listed = jobs.get(pid, [])
            shown = tuple((j["id"], j["status"], j.get("approval"), j.get("updated_at"),
                           printer_states.get(str(j.get("assigned_printer_id") or "")))
                          for j in listed)
            if self._listed.get(pid) == shown:
                continue
            entries = ua.Variant(job_order_list(listed, printer_states),
                                 ua.VariantType.ExtensionObject, is_array=True)
            nid = ua.NodeId(printer_job_management(pid, "JobOrderControl/JobOrderList"),
                            self.control.NamespaceIndex)
            if (await aspace.write_attribute_value(nid, value, ua.DataValue(entries))).is_good():
                self._listed[pid] = shown
            elif not shown:
                self._listed.pop(pid, None)  # a printer gone with its nodes
            await asyncio.sleep(0)
        for pid, state in list(self.current_of.items()):
            if self._current_shown.get(pid) == state:
                continue
            nid = ua.NodeId(printer_job_management(pid, "JobOrderControl/CurrentState"),
                            self.control.NamespaceIndex)
            text = ua.Variant(ua.LocalizedText(state), ua.VariantType.LocalizedText)
            if (await aspace.write_attribute_value(nid, value, ua.DataValue(text))).is_good():
                self._current_shown[pid] = state
            else:  # no such printer (any more): its next job order's move says it again
                del self.current_of[pid]
                self._current_shown.pop(pid, None)

    def _variable(self, name: str) -> Node:
        base = self.control
        return self.server.get_node(ua.NodeId(f"{base.Identifier}.{name}", base.NamespaceIndex))

    async def _write_current(self, state: str) -> None:
        text = ua.Variant(ua.LocalizedText(state), ua.VariantType.LocalizedText)
        await self._variable("CurrentState").write_value(ua.DataValue(text))
