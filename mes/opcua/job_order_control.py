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

Refreshed from the state at most once every REFRESH seconds after a job, printer or spool
changed (a list of 1,000 job orders is rebuilt whole), and every STATUS_REFRESH seconds
while only printers' statuses changed (a paused print is Interrupted): telemetry of 1,000
printers changes some status every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asyncua import Node, Server, ua
from sqlalchemy import Connection

from mes.opcua.job_responses import JOB_ORDER_STATES, job_order, job_order_state, state_data
from mes.opcua.privacy import NOBODY, Privacy
from mes.state.opcua_reads import job_order_control

log = logging.getLogger(__name__)

LISTED = 1_000
REFRESH = 1.0
STATUS_REFRESH = 10.0
MAX_JOB_ORDERS = 65_535
ENTITIES = frozenset({"print_job", "printer", "filament"})
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
    """Writes JobOrderControl's variables; `changed` (any thread) asks for a refresh."""

    def __init__(self, server: Server, control: ua.NodeId, read: Reader,
                 privacy: Privacy) -> None:
        self.server = server
        self.control = control
        self._read = read
        self._privacy = privacy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty = asyncio.Event()
        self.refreshes = 0
        self._statuses_changed = False
        self.current: str | None = None  # the state the last changed job order moved to

    def attach(self) -> None:
        """Refresh from the server's event loop from now on."""
        self._loop = asyncio.get_running_loop()
        self._dirty.set()

    def listener(self, command: Mapping[str, Any], outcome: Any) -> None:
        """A state machine listener (Raft thread): a job, printer or spool changed."""
        loop = self._loop
        events = getattr(outcome, "events", None)
        if loop is None or not events:
            return
        if any(e.entity in ENTITIES for e in events):
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._dirty.set)
        elif any(e.entity == "printer_status" for e in events):
            self._statuses_changed = True

    def detach(self) -> None:
        """Stop listening (the listener stays registered but does nothing)."""
        self._loop = None

    def moved(self, state: str) -> None:
        """A job order moved to `state` (from the mirror's events)."""
        if state in JOB_ORDER_STATES:
            self.current = state
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
        found = await self._read(lambda conn: job_order_control(conn, LISTED))
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
            node = self._variable(name)
            if name == "JobOrderList":
                self._privacy.owners[node.nodeid] = NOBODY
            await node.write_value(ua.DataValue(variant))
        if self.current is not None:
            await self._write_current(self.current)
        self.refreshes += 1

    def _variable(self, name: str) -> Node:
        base = self.control
        return self.server.get_node(ua.NodeId(f"{base.Identifier}.{name}", base.NamespaceIndex))

    async def _write_current(self, state: str) -> None:
        text = ua.Variant(ua.LocalizedText(state), ua.VariantType.LocalizedText)
        await self._variable("CurrentState").write_value(ua.DataValue(text))
