"""Replacements for two hot spots of asyncua 2.1.0's subscription service, installed at start-up.

Measured (reference/opcua.md): with 8,000 monitored values written once a second, 62% of the
server's CPU went to `copy.deepcopy` of every DataValue per monitored item
(`MonitoredItemValues.set_current_datavalue`) and about 10% to the throw-away default
`DataValue()`/`Variant()` that `ua.MonitoredItemNotification()` builds in
`MonitoredItemService.datachange_callback` before its `Value` is replaced.

- `set_current_datavalue` keeps a private snapshot of the last value so that the next write can
  be compared with it (data change trigger, deadband). The replacement copies the DataValue and
  its Variant (new objects, so assigning their fields later cannot change the snapshot) and
  shares the Variant's payload only when that payload is an immutable scalar (number, string,
  bytes, datetime, UUID, None); any other payload (arrays, structures, NodeIds, ...) still goes
  through `copy.deepcopy`, exactly as upstream. StatusCode objects are shared: asyncua never
  assigns `StatusCode.value` after creating one (and the server stores new DataValues on every
  write: `AddressSpace.write_attribute_value` keeps the object it is given, and our writers build
  a fresh DataValue per write). The snapshot compares equal to the deep copy, field for field.
- `datachange_callback` is upstream's code with the notification built as
  `MonitoredItemNotification(ClientHandle, Value)` once the filter passed, instead of a default
  one (whose default factory builds a DataValue and a guessed Variant) filled in afterwards.

- The callback also serves SetTriggering (mes/opcua/triggering.py): an item in Sampling
  mode keeps its notifications until an item it is linked to reports.

- `_create_data_change_monitored_item` first refuses deadbands Part 4 does not allow, and the
  callback compares with the last value reported, percent deadbands included
  (mes/opcua/deadbands.py).

asyncua is pinned (pyproject): `install_speedups` patches only the exact upstream functions it
was written against (version and sha256 of their source, below) and leaves asyncua untouched,
with a warning, otherwise. tests/test_opcua_speedups.py fails when upstream changes them.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncua
from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues

from mes.opcua import deadbands, triggering

logger = logging.getLogger(__name__)

ASYNCUA_VERSION = "2.1.0"
# sha256 of inspect.getsource() of each replaced upstream function, asyncua 2.1.0.
ORIGINAL_SOURCE_SHA256: dict[str, str] = {
    "MonitoredItemValues.set_current_datavalue":
        "df9d5e87226514b2e2512f5a9f4e1a54f350b6f0e57b890b4dcfc1d5d2c731d5",
    "MonitoredItemService.datachange_callback":
        "d4468698f4d16058fe297b56f9900b9cd5883027bda8c94ce90b724c9045ea3b",
    "MonitoredItemService._create_data_change_monitored_item":
        "33bdd22321c59eaa8053e8b8105ace1bab8aa0f19c7cef7d34b1ffb86374d149",
}

# Variant payloads that can be shared between the stored value and the snapshot.
_IMMUTABLE_SCALARS: frozenset[type] = frozenset({
    type(None), bool, int, float, str, bytes, datetime.datetime, uuid.UUID,
})

_TARGETS: dict[str, tuple[type, str]] = {
    "MonitoredItemValues.set_current_datavalue": (MonitoredItemValues, "set_current_datavalue"),
    "MonitoredItemService.datachange_callback": (MonitoredItemService, "datachange_callback"),
    "MonitoredItemService._create_data_change_monitored_item": (
        MonitoredItemService, "_create_data_change_monitored_item"),
}
_originals: dict[str, Callable[..., Any]] = {}


def snapshot_datavalue(value: ua.DataValue) -> ua.DataValue:
    """A copy of `value` equal to `copy.deepcopy(value)` that shares only immutable parts."""
    variant = value.Value
    if variant is not None and (type(variant.Value) not in _IMMUTABLE_SCALARS
                                or variant.Dimensions is not None):
        return copy.deepcopy(value)
    copied: ua.DataValue = object.__new__(ua.DataValue)
    if variant is not None:
        new_variant: ua.Variant = object.__new__(ua.Variant)
        new_variant.Value = variant.Value
        new_variant.VariantType = variant.VariantType
        new_variant.Dimensions = None
        new_variant.is_array = variant.is_array
        variant = new_variant
    copied.Encoding = value.Encoding
    copied.Value = variant
    copied.StatusCode = value.StatusCode
    copied.SourceTimestamp = value.SourceTimestamp
    copied.ServerTimestamp = value.ServerTimestamp
    copied.SourcePicoseconds = value.SourcePicoseconds
    copied.ServerPicoseconds = value.ServerPicoseconds
    return copied


def _set_current_datavalue(self: MonitoredItemValues, cur_val: ua.DataValue) -> None:
    self.old_dvalue = self.current_dvalue
    self.current_dvalue = snapshot_datavalue(cur_val)


async def _datachange_callback(
    self: MonitoredItemService, handle: int, value: ua.DataValue, error: ua.StatusCode | None = None
) -> None:
    if error:
        self.logger.info(
            "subscription %s: datachange callback called with handle '%s' and error '%s'",
            self, handle, error,
        )
        await self.trigger_statuschange(error)
        return
    mid = self._monitored_datachange[handle]
    mdata = self._monitored_items[mid]
    if mdata.mode == ua.MonitoringMode.Disabled:
        return
    mdata.mvalue.set_current_datavalue(value)
    if mdata.filter:
        passed = self._is_data_changed(mdata.mvalue, mdata.filter.Trigger) \
            and deadbands.exceeded(self.aspace, mdata, mdata.filter)
    else:
        passed = self._is_data_changed(mdata.mvalue, ua.DataChangeTrigger.StatusValue)
    if passed:
        deadbands.reported(mdata)
        event = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
        if triggering.held(mdata, event):  # Sampling: reported when its trigger reports
            return
        await self.isub.enqueue_datachange_event(mid, event, mdata.queue_size)
        await triggering.fire(self, mid)


async def _create_data_change_monitored_item(
        self: MonitoredItemService, params: ua.MonitoredItemCreateRequest
) -> ua.MonitoredItemCreateResult:
    refused = deadbands.refusal(self.aspace, params)
    if refused is not None:
        return ua.MonitoredItemCreateResult(StatusCode=ua.StatusCode(refused))
    original = _originals["MonitoredItemService._create_data_change_monitored_item"]
    result: ua.MonitoredItemCreateResult = await original(self, params)
    return result


_REPLACEMENTS: dict[str, Callable[..., Any]] = {
    "MonitoredItemValues.set_current_datavalue": _set_current_datavalue,
    "MonitoredItemService.datachange_callback": _datachange_callback,
    "MonitoredItemService._create_data_change_monitored_item":
        _create_data_change_monitored_item,
}


def source_sha256(function: Callable[..., Any]) -> str:
    """sha256 (hex) of a function's source text."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def upstream_mismatches() -> list[str]:
    """Why the installed asyncua is not the one the replacements were written for (empty: it is)."""
    problems: list[str] = []
    if asyncua.__version__ != ASYNCUA_VERSION:
        problems.append(f"asyncua {asyncua.__version__} is installed, not {ASYNCUA_VERSION}")
    for name, (owner, attribute) in _TARGETS.items():
        original = _originals.get(name, getattr(owner, attribute))
        try:
            digest = source_sha256(original)
        except (OSError, TypeError) as exc:
            problems.append(f"{name}: source unavailable ({exc})")
            continue
        if digest != ORIGINAL_SOURCE_SHA256[name]:
            problems.append(f"{name} changed upstream (source sha256 {digest})")
    return problems


def speedups_installed() -> bool:
    """Whether the replacements are in place."""
    return all(getattr(owner, attribute) is _REPLACEMENTS[name]
               for name, (owner, attribute) in _TARGETS.items())


def install_speedups() -> None:
    """Replace the two asyncua hot spots (idempotent; warns and does nothing on another asyncua)."""
    if speedups_installed():
        return
    problems = upstream_mismatches()
    if problems:
        logger.warning("OPC UA speed-ups not installed: %s", "; ".join(problems))
        return
    for name, (owner, attribute) in _TARGETS.items():
        _originals[name] = getattr(owner, attribute)
        setattr(owner, attribute, _REPLACEMENTS[name])


def uninstall_speedups() -> None:
    """Put asyncua's own functions back (for comparisons in tests and benchmarks)."""
    for name, (owner, attribute) in _TARGETS.items():
        original = _originals.pop(name, None)
        if original is not None:
            setattr(owner, attribute, original)
