"""The farm's OPC UA events: a job's status changed, a print completed, and the same status
change as an ISA-95 job order status event (its JobOrder, JobState and JobResponse, as
Machinery Jobs clients expect; OPC 10031-4's ISA95JobOrderStatusEventType is abstract, so
ours is its concrete subtype, PrintJobOrderStatusEventType).

asyncua delivers an event only to subscribers of the node that emits it, so each event is
delivered on `Server` (with SourceNode = the printer) and again on the printer object: one
event, with one EventId and Time, through both notifiers.

A select clause whose TypeDefinitionId names a type this event is not (nor a subtype of)
selects Null (Part 4, 7.7.4); asyncua ignored it and answered a same-named field of another
type.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua

from mes.opcua.job_responses import job_order, job_order_state, job_response, state_data
from mes.opcua_model.nodesets import ISA95_URI

# OPC 10031-4's ISA95JobOrderStatusEventType in its namespace (abstract: ours subtypes it).
ISA95_STATUS_EVENT_TYPE = 1006

JOB_STATUS_CHANGED = 1001  # numeric ids in our namespace (mes/opcua_model/printfarm.xml)
PRINT_COMPLETED = 1002
JOB_ORDER_STATUS = 1006


class FarmEvents:
    """Emits our event types; `init` once the model is loaded."""

    def __init__(self, server: Server, farm_ns: int) -> None:
        self.server = server
        self.farm_ns = farm_ns
        self._changed: Any = None
        self._completed: Any = None
        self._order_status: Any = None
        self.job_order_control: ua.NodeId | None = None  # the ISA-95 events' SourceNode
        # Told each job order's new state and its printer (assigned, else asked for).
        self.on_moved: Callable[[str, str | None], None] | None = None
        self.emitted = 0

    async def init(self) -> None:
        """Create one generator per event type (emitting on Server)."""
        self._changed = await self.server.get_event_generator(
            ua.NodeId(JOB_STATUS_CHANGED, self.farm_ns), ua.ObjectIds.Server)
        self._completed = await self.server.get_event_generator(
            ua.NodeId(PRINT_COMPLETED, self.farm_ns), ua.ObjectIds.Server)
        # asyncua takes a field's type from the type's property value, and ours have none.
        text, flag = ua.VariantType.String, ua.VariantType.Boolean
        self._changed.event.data_types.update(
            JobId=text, PrinterId=text, FromStatus=text, ToStatus=text)
        self._completed.event.data_types.update(JobId=text, PrinterId=text,
                                                BedAwaitsClearing=flag)
        self._order_status = await self.server.get_event_generator(
            ua.NodeId(JOB_ORDER_STATUS, self.farm_ns), ua.ObjectIds.Server)
        structure = ua.VariantType.ExtensionObject
        self._order_status.event.data_types.update(
            JobOrder=structure, JobState=structure, JobResponse=structure)
        isa95 = await self.server.get_namespace_index(ISA95_URI)
        for generator, types in (
                (self._changed, [ua.NodeId(JOB_STATUS_CHANGED, self.farm_ns)]),
                (self._completed, [ua.NodeId(PRINT_COMPLETED, self.farm_ns)]),
                (self._order_status, [ua.NodeId(JOB_ORDER_STATUS, self.farm_ns),
                                      ua.NodeId(ISA95_STATUS_EVENT_TYPE, isa95)])):
            _select_by_type(generator.event,
                            {*types, ua.NodeId(ua.ObjectIds.BaseEventType)})

    async def _emit(self, generator: Any, source: ua.NodeId | None, fields: dict[str, Any],
                    named: ua.NodeId | None = None) -> None:
        """Deliver on Server, and again through `source` (a printer) when given; `named`:
        the SourceNode when it is not `source`."""
        event = generator.event
        for name, value in fields.items():
            setattr(event, name, value)
        event.SourceNode = source or named or ua.NodeId(ua.ObjectIds.Server)
        event.ReceiveTime = datetime.now(UTC)
        deliver = generator.isession.subscription_service.trigger_event
        event.emitting_node = ua.NodeId(ua.ObjectIds.Server)
        await deliver(event)
        if source is not None:  # the same event, through the printer
            event.emitting_node = source
            await deliver(event)
        self.emitted += 1

    async def job_status_changed(self, seq: int, at: float, job_id: str,
                                 printer: ua.NodeId | None, printer_id: str,
                                 before: str | None, after: str) -> None:
        """Job history entry `seq`: a job went from `before` (None: created) to `after`."""
        await self._emit(self._changed, printer, changed_fields(
            seq, at, job_id, printer_id, before, after))

    async def print_completed(self, seq: int, at: float, job_id: str,
                              printer: ua.NodeId | None, printer_id: str,
                              bed_awaits_clearing: bool) -> None:
        """A printer finished a job (the part waits on the bed when `bed_awaits_clearing`)."""
        await self._emit(self._completed, printer, completed_fields(
            seq, at, job_id, printer_id, bed_awaits_clearing))


    async def job_order_status(self, seq: int, at: float, job: dict[str, Any],
                               after: str) -> None:
        """Job history entry `seq` as an ISA-95 job order status event: `job` went to
        `after`."""
        fields = order_status_fields(seq, at, job, after)
        await self._emit(self._order_status, None, fields, self.job_order_control)
        if self.on_moved is not None:
            self.on_moved(fields["JobState"][0].StateText.Text,
                          job.get("assigned_printer_id") or job.get("printer_id"))


def order_status_fields(seq: int, at: float, job: dict[str, Any], after: str
                        ) -> dict[str, Any]:
    """A PrintJobOrderStatus event's fields: the job order as its ISA-95 structures, in the
    state the entry moved it to (never an owner or a file)."""
    moved = {**job, "status": after}
    state = job_order_state(moved)
    response = job_response(moved, [{"to_status": after, "at": at}])
    return {"EventId": event_id("isa95", seq), "Time": datetime.fromtimestamp(at, UTC),
            "SourceName": "JobOrderControl", "Severity": 100,
            "Message": ua.LocalizedText(f"job order {job['id']}: {state}"),
            "JobOrder": job_order(moved), "JobState": [state_data(state)], "JobResponse": response}


def event_id(kind: str, seq: int) -> bytes:
    """The EventId of the event `kind` of job history entry `seq`: the same on every node,
    live and in HistoryRead, so a client that changes node can tell events it has seen."""
    return f"mes:{kind}:{seq}".encode()


def changed_fields(seq: int, at: float, job_id: str, printer_id: str, before: str | None,
                   after: str) -> dict[str, Any]:
    """A JobStatusChanged event's fields (besides its type and source node)."""
    return {"EventId": event_id("changed", seq), "Time": datetime.fromtimestamp(at, UTC),
            "SourceName": printer_id or "PrintFarm", "Severity": 100,
            "Message": ua.LocalizedText(f"job {job_id}: {before or 'new'} -> {after}"),
            "JobId": job_id, "PrinterId": printer_id, "FromStatus": before or "",
            "ToStatus": after}


def completed_fields(seq: int, at: float, job_id: str, printer_id: str,
                     bed_awaits_clearing: bool) -> dict[str, Any]:
    """A PrintCompleted event's fields (besides its type and source node)."""
    return {"EventId": event_id("completed", seq), "Time": datetime.fromtimestamp(at, UTC),
            "SourceName": printer_id, "Severity": 100,
            "Message": ua.LocalizedText(f"printer {printer_id} completed job {job_id}"),
            "JobId": job_id, "PrinterId": printer_id, "BedAwaitsClearing": bed_awaits_clearing}


def _select_by_type(event: Any, types: set[ua.NodeId]) -> None:
    """Make `event` answer Null for select clauses of a type it is not (`types`: its type
    and supertypes)."""
    select = event.to_event_fields

    def to_event_fields(clauses: list[ua.SimpleAttributeOperand]) -> list[ua.Variant]:
        fields: list[ua.Variant] = select(clauses)
        return [field if _of(clause, types) else ua.Variant(None)
                for clause, field in zip(clauses, fields, strict=True)]

    event.to_event_fields = to_event_fields


def _of(clause: ua.SimpleAttributeOperand, types: set[ua.NodeId]) -> bool:
    wanted = clause.TypeDefinitionId
    return wanted is None or wanted.is_null() or wanted in types
