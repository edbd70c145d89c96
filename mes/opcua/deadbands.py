"""DataChangeFilter deadbands as Part 4 (7.17.2) defines them, for asyncua's subscriptions.

asyncua 2.1.0 compares each value with the one written just before it (so a value that
drifts by less than the deadband at every write is never reported, however far it goes),
implements no percent deadband (it logs a warning and reports everything), and accepts a
deadband on any variable. Here:

- a value is compared with the last value reported to the client (a change of status, or a
  value that is not a number, is always reported);
- `Absolute`: reported when it differs from the last reported by more than DeadbandValue;
  `Percent`: by more than DeadbandValue % of the variable's EURange (High - Low), as
  AnalogItemType variables carry it (the printers' temperatures);
- creating a monitored item with a percent deadband on a variable without EURange answers
  Bad_DeadbandFilterInvalid, a deadband outside 0..100 % likewise, and a deadband on a
  variable whose value is not a number Bad_FilterNotAllowed.
"""

from __future__ import annotations

from typing import Any

from asyncua import ua

# Data types whose values a deadband may compare (Part 4: numbers only).
_NUMERIC = frozenset({ua.ObjectIds.SByte, ua.ObjectIds.Byte, ua.ObjectIds.Int16,
                      ua.ObjectIds.UInt16, ua.ObjectIds.Int32, ua.ObjectIds.UInt32,
                      ua.ObjectIds.Int64, ua.ObjectIds.UInt64, ua.ObjectIds.Float,
                      ua.ObjectIds.Double, ua.ObjectIds.Number, ua.ObjectIds.Integer,
                      ua.ObjectIds.UInteger, ua.ObjectIds.Decimal})
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)


def eu_range(aspace: Any, nodeid: ua.NodeId) -> Any:
    """The EURange property of a variable (None when it has none)."""
    node = aspace.get(nodeid)
    if node is None:
        return None
    for ref in node.references:
        if (ref.IsForward and ref.ReferenceTypeId == _HAS_PROPERTY
                and ref.BrowseName.Name == "EURange"):
            value = aspace.read_attribute_value(ref.NodeId, ua.AttributeIds.Value).Value
            found = value.Value if value is not None else None
            return found if hasattr(found, "High") and hasattr(found, "Low") else None
    return None


def refusal(aspace: Any, params: ua.MonitoredItemCreateRequest) -> int | None:
    """The status code a monitored item with this filter is refused with (None: accepted)."""
    flt = params.RequestedParameters.Filter
    # By its fields: a decoded filter's class need not be the one `ua` names now (asyncua
    # may have loaded data type definitions since).
    kind = getattr(flt, "DeadbandType", None)
    if kind is None or kind == ua.DeadbandType.None_:
        return None
    nodeid = params.ItemToMonitor.NodeId
    if params.ItemToMonitor.AttributeId != ua.AttributeIds.Value or nodeid not in aspace:
        return None  # asyncua answers these itself
    dtype = aspace.read_attribute_value(nodeid, ua.AttributeIds.DataType).Value
    type_id = dtype.Value if dtype is not None else None
    if not (isinstance(type_id, ua.NodeId) and type_id.NamespaceIndex == 0
            and type_id.Identifier in _NUMERIC):
        return int(ua.StatusCodes.BadFilterNotAllowed)
    value = getattr(flt, "DeadbandValue", None)
    if not isinstance(value, int | float) or value < 0:
        return int(ua.StatusCodes.BadDeadbandFilterInvalid)
    if kind == ua.DeadbandType.Percent:
        rng = eu_range(aspace, nodeid)
        if rng is None or value > 100 or rng.High is None or rng.Low is None:
            return int(ua.StatusCodes.BadDeadbandFilterInvalid)
    return None


def exceeded(aspace: Any, mdata: Any, flt: ua.DataChangeFilter) -> bool:
    """Whether the item's current value leaves the deadband around the last one reported."""
    kind = getattr(flt, "DeadbandType", ua.DeadbandType.None_)
    if kind == ua.DeadbandType.None_:
        return True
    values = mdata.mvalue
    current = values.get_current_datavalue()
    last = getattr(values, "reported", None)
    if current is None or last is None or current.StatusCode != last.StatusCode:
        return True
    now, then = _number(current), _number(last)
    if now is None or then is None:
        return (now is None) != (then is None) or current.Value != last.Value
    if kind == ua.DeadbandType.Percent:
        cached = getattr(mdata, "percent_width", None)  # (percent, width): a modified filter
        if cached is None or cached[0] != flt.DeadbandValue:  # asks again
            rng = eu_range(aspace, mdata.read_value_id.NodeId)
            if rng is None:
                return True
            cached = mdata.percent_width = (
                flt.DeadbandValue, abs(rng.High - rng.Low) * flt.DeadbandValue / 100)
        return bool(abs(now - then) > cached[1])
    return bool(abs(now - then) > flt.DeadbandValue)


def reported(mdata: Any) -> None:
    """Remember the value just sent to the client (the next deadband's centre)."""
    mdata.mvalue.reported = mdata.mvalue.get_current_datavalue()


def _number(value: ua.DataValue) -> float | None:
    payload = value.Value.Value if value.Value is not None else None
    if isinstance(payload, bool) or not isinstance(payload, int | float):
        return None
    return float(payload)
