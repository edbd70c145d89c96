"""HistoryRead from the replicated state (Part 11): the farm's past, on every node.

What has a history is what the state keeps: each job's status changes (its
`PrintFarm/Jobs/<job>/Status`, read raw), each printer's states (its
`MachineryItemState/CurrentState`, read raw, from the state stretches the utilisation
reports use; as far back as their retention) and the events made from them (on `Server` and on
each printer, read as events with an EventFilter, with the EventIds the live events had;
the ISA-95 job order status events on `Server` only, as they were delivered).
Anything else answers Bad_HistoryOperationUnsupported, as do modified-value and at-time
reads. A read returns at most its NumValuesPerNode (and at most HISTORY_PAGE) values, with a
continuation point for the rest; the retention settings bound how far back it reaches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from sqlalchemy import Connection

from mes.opcua.events import (
    JOB_ORDER_STATUS,
    JOB_STATUS_CHANGED,
    PRINT_COMPLETED,
    changed_fields,
    completed_fields,
    order_status_fields,
)
from mes.opcua.item_states import ITEM_STATE_OF
from mes.opcua.job_management import FARM_JOB_ORDER_CONTROL
from mes.state.opcua_reads import history_between, state_intervals_between

Reader = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
HISTORY_PAGE = 1_000
_UNSUPPORTED = ua.StatusCodes.BadHistoryOperationUnsupported
_SERVER = ua.NodeId(ua.ObjectIds.Server)
_BASE_EVENT = ua.NodeId(ua.ObjectIds.BaseEventType)
# Field types of the events' fields (for the Variants of a HistoryEvent).
_TYPES = {"EventId": ua.VariantType.ByteString, "EventType": ua.VariantType.NodeId,
          "SourceNode": ua.VariantType.NodeId, "SourceName": ua.VariantType.String,
          "Time": ua.VariantType.DateTime, "ReceiveTime": ua.VariantType.DateTime,
          "Message": ua.VariantType.LocalizedText, "Severity": ua.VariantType.UInt16,
          "JobId": ua.VariantType.String, "PrinterId": ua.VariantType.String,
          "FromStatus": ua.VariantType.String, "ToStatus": ua.VariantType.String,
          "BedAwaitsClearing": ua.VariantType.Boolean,
          "JobOrder": ua.VariantType.ExtensionObject,
          "JobState": ua.VariantType.ExtensionObject,
          "JobResponse": ua.VariantType.ExtensionObject}


class FarmHistory:
    """Answers HistoryRead for the farm's nodes (namespace `farm_ns`)."""

    def __init__(self, read: Reader, farm_ns: int) -> None:
        self.read = read
        self.farm_ns = farm_ns
        self.changed = ua.NodeId(JOB_STATUS_CHANGED, farm_ns)
        self.completed = ua.NodeId(PRINT_COMPLETED, farm_ns)
        self.order_status = ua.NodeId(JOB_ORDER_STATUS, farm_ns)
        self.job_order_control = ua.NodeId(FARM_JOB_ORDER_CONTROL, farm_ns)

    async def history_read(self, params: ua.HistoryReadParameters
                           ) -> list[ua.HistoryReadResult]:
        """One result per node to read."""
        details = params.HistoryReadDetails
        # Releasing a point frees nothing (each says where it was) and reads nothing; an item
        # without one is read (asyncua's own parameters default to releasing).
        return [ua.HistoryReadResult()
                if params.ReleaseContinuationPoints and item.ContinuationPoint
                else await self._one(details, item) for item in params.NodesToRead]

    async def _one(self, details: Any, item: ua.HistoryReadValueId) -> ua.HistoryReadResult:
        after = _after(item.ContinuationPoint)
        if after is None:
            return _status(ua.StatusCodes.BadContinuationPointInvalid)
        if isinstance(details, ua.ReadRawModifiedDetails) and not details.IsReadModified:
            job = self._job_of_status(item.NodeId)
            if job is not None:
                return await self._statuses(job, details, after)
            printer = self._printer_of_item_state(item.NodeId)
            if printer is not None:
                return await self._item_states(printer, details, after)
            return _status(_UNSUPPORTED)
        if isinstance(details, ua.ReadEventDetails):
            printer = self._printer_of(item.NodeId)
            if item.NodeId != _SERVER and printer is None:
                return _status(_UNSUPPORTED)
            return await self._events(printer, details, after)
        return _status(_UNSUPPORTED)

    def _job_of_status(self, nodeid: ua.NodeId) -> str | None:
        parts = self._farm_path(nodeid)
        return parts[1] if len(parts) == 3 and parts[0] == "Jobs" and parts[2] == "Status" \
            else None

    def _printer_of_item_state(self, nodeid: ua.NodeId) -> str | None:
        parts = self._farm_path(nodeid)
        return parts[1] if parts[:1] == ["Printers"] and parts[2:] == [
            "MachineryItemState", "CurrentState"] and len(parts) == 4 else None

    def _printer_of(self, nodeid: ua.NodeId) -> str | None:
        parts = self._farm_path(nodeid)
        return parts[1] if len(parts) == 2 and parts[0] == "Printers" else None

    def _farm_path(self, nodeid: ua.NodeId) -> list[str]:
        """The parts of one of our string node ids ("Jobs/<id>/Status"); [] otherwise."""
        ident = nodeid.Identifier
        if nodeid.NamespaceIndex != self.farm_ns or not isinstance(ident, str):
            return []
        return ident.split("/")

    async def _rows(self, start: float | None, end: float | None, after: int, limit: int,
                    job_id: str | None = None, printer_id: str | None = None,
                    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.read(lambda c: history_between(
            c, start, end, after, limit + 1, job_id, printer_id))
        return found

    async def _statuses(self, job_id: str, details: ua.ReadRawModifiedDetails,
                        after: int) -> ua.HistoryReadResult:
        limit = _limit(details.NumValuesPerNode)
        start, end = _window(details.StartTime, details.EndTime)
        rows = await self._rows(start, end, after, limit, job_id=job_id)
        return _raw_values([(ua.Variant(r["to_status"], ua.VariantType.String), r["at"],
                             r["seq"]) for r in rows], limit)

    async def _item_states(self, printer_id: str, details: ua.ReadRawModifiedDetails,
                           after: int) -> ua.HistoryReadResult:
        """A printer's MachineryItemState, from its state stretches (each value at the time
        the stretch began)."""
        limit = _limit(details.NumValuesPerNode)
        start, end = _window(details.StartTime, details.EndTime)
        rows: list[dict[str, Any]] = await self.read(lambda c: state_intervals_between(
            c, printer_id, start, end, after, limit + 1))
        return _raw_values([(ua.Variant(ua.LocalizedText(ITEM_STATE_OF[r["state"]]),
                                        ua.VariantType.LocalizedText), r["started_at"],
                             r["seq"]) for r in rows], limit)

    async def _events(self, printer_id: str | None, details: ua.ReadEventDetails,
                      after: int) -> ua.HistoryReadResult:
        limit = _limit(details.NumValuesPerNode)
        start, end = _window(details.StartTime, details.EndTime)
        rows = await self._rows(start, end, after, limit, printer_id=printer_id)
        wanted = _of_types(details.Filter, {self.changed, self.completed, self.order_status})
        clauses = details.Filter.SelectClauses if details.Filter else []
        events = []
        for row in rows[:limit]:
            for type_id, fields in self._made_from(row, on_server=printer_id is None):
                if wanted is None or type_id in wanted:
                    events.append(ua.HistoryEventFieldList(
                        EventFields=_select(clauses, type_id, fields)))
        result = ua.HistoryReadResult(HistoryData=ua.HistoryEvent(Events=events))
        if len(rows) > limit:
            result.ContinuationPoint = _point(rows[limit - 1]["seq"])
        return result

    def _made_from(self, row: dict[str, Any], on_server: bool = True
                   ) -> list[tuple[ua.NodeId, dict[str, Any]]]:
        """The events a job history entry made, as the live mirror emitted them (the ISA-95
        one only `on_server`: it was not delivered through a printer)."""
        seq, at, job_id = int(row["seq"]), float(row["at"]), str(row["job_id"])
        before, after = row["from_status"], str(row["to_status"])
        printer_id = str(row.get("job_printer_id") or "")
        source = ua.NodeId(f"Printers/{printer_id}", self.farm_ns) if printer_id else _SERVER
        common = {"SourceNode": source, "ReceiveTime": _time(at)}
        made = [(self.changed, {**common, "EventType": self.changed, **changed_fields(
            seq, at, job_id, printer_id, before, after)})]
        if after == "Done":
            made.append((self.completed, {**common, "EventType": self.completed,
                                          **completed_fields(seq, at, job_id, printer_id,
                                                             before == "Running")}))
        if on_server:
            job = {"id": job_id, "filament_id": row.get("job_filament_id"),
                   "print_weight_in_grams": row.get("job_grams"),
                   "printer_id": row.get("job_asked_printer_id"),
                   "assigned_printer_id": row.get("job_assigned_printer_id"),
                   "approval": row.get("job_approval")}
            made.append((self.order_status, {
                "SourceNode": self.job_order_control, "ReceiveTime": _time(at),
                "EventType": self.order_status, **order_status_fields(seq, at, job, after)}))
        return made


def _select(clauses: list[ua.SimpleAttributeOperand], type_id: ua.NodeId,
            fields: dict[str, Any]) -> list[ua.Variant]:
    """The event's fields in the order of the select clauses (Null for what it lacks or a
    clause of another type)."""
    values = []
    for clause in clauses:
        typed = clause.TypeDefinitionId
        name = clause.BrowsePath[-1].Name if clause.BrowsePath else ""
        if (typed is not None and not typed.is_null() and typed not in (type_id, _BASE_EVENT)) \
                or name not in fields or fields[name] is None:
            values.append(ua.Variant(None))
        else:
            values.append(ua.Variant(fields[name], _TYPES[name]))
    return values


def _of_types(event_filter: ua.EventFilter | None, ours: set[ua.NodeId]
              ) -> set[ua.NodeId] | None:
    """Which of `ours` an EventFilter's where clause admits by OfType (BaseEventType: all of
    them, their supertype); None: any."""
    if event_filter is None or event_filter.WhereClause is None:
        return None
    types: set[ua.NodeId] = set()
    for element in event_filter.WhereClause.Elements:
        if element.FilterOperator != ua.FilterOperator.OfType:
            continue
        for operand in element.FilterOperands:
            value = getattr(operand, "Value", None)
            if value is not None and isinstance(value.Value, ua.NodeId):
                types |= ours if value.Value == _BASE_EVENT else {value.Value}
    return types or None


def _raw_values(found: list[tuple[ua.Variant, float, int]], limit: int
                ) -> ua.HistoryReadResult:
    """A raw read's answer: the first `limit` of (value, time, sequence number) found (one
    more was asked for), and a continuation point after the last one given when there are
    more."""
    result = ua.HistoryReadResult(HistoryData=ua.HistoryData(DataValues=[
        ua.DataValue(value, SourceTimestamp=_time(at), ServerTimestamp=_time(at))
        for value, at, _ in found[:limit]]))
    if len(found) > limit:
        result.ContinuationPoint = _point(found[limit - 1][2])
    return result


def _limit(asked: int) -> int:
    return min(asked, HISTORY_PAGE) if asked else HISTORY_PAGE


def _window(start: datetime | None, end: datetime | None) -> tuple[float | None, float | None]:
    """[start, end] as Unix times (an unset or minimum time: open)."""
    def seconds(when: datetime | None) -> float | None:
        if when is None or when.year <= 1601:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    low, high = seconds(start), seconds(end)
    if low is not None and high is not None and low > high:
        low, high = high, low  # a backwards window: the same entries (oldest first)
    return low, high


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(float(at), UTC)


def _point(seq: int) -> bytes:
    return f"mes-history:{int(seq)}".encode()


def _after(point: bytes | None) -> int | None:
    """The sequence number a continuation point continues after (0: none given)."""
    if not point:
        return 0
    text = bytes(point).decode(errors="replace")
    prefix, _, seq = text.partition(":")
    return int(seq) if prefix == "mes-history" and seq.isascii() and seq.isdigit() else None


def _status(code: int) -> ua.HistoryReadResult:
    return ua.HistoryReadResult(StatusCode=ua.StatusCode(code))
