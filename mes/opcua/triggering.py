"""SetTriggering (OPC UA Part 4, 5.12.5 and 5.12.1.6), which asyncua 2.1 does not serve.

A client links monitored items of one subscription to a triggering item. A linked item in
Sampling mode keeps its notifications (the newest `QueueSize` of them) instead of reporting
them; each time the triggering item reports, the linked items report what they kept. A
linked item in Reporting mode reports as always. asyncua treats Sampling as Reporting, so
our data-change callback (mes/opcua/speedups.py) asks `held` before it reports and calls
`fire` after: only data-change items hold and trigger (an event item reports as always).

The links live on asyncua's MonitoredItemService of the subscription (`mes_links`), and go
with it; a link to an item that was deleted is dropped when it would fire.
"""

from __future__ import annotations

from typing import Any

from asyncua import ua

_GOOD = ua.StatusCode(ua.StatusCodes.Good)
_INVALID_ITEM = ua.StatusCode(ua.StatusCodes.BadMonitoredItemIdInvalid)


class TriggeringRefused(Exception):
    """The whole request is refused with this status code (a ServiceFault)."""

    def __init__(self, code: int) -> None:
        super().__init__(ua.StatusCode(code).name)
        self.code = code


def _links(service: Any) -> dict[int, list[int]]:
    links: dict[int, list[int]] | None = getattr(service, "mes_links", None)
    if links is None:
        links = service.mes_links = {}
    return links


def set_triggering(subscriptions: dict[int, Any], session_id: ua.NodeId,
                   params: ua.SetTriggeringParameters) -> ua.SetTriggeringResult:
    """Add and remove the links of one triggering item; raises TriggeringRefused for the
    whole request (no links, an unknown subscription or triggering item)."""
    if not params.LinksToAdd and not params.LinksToRemove:
        raise TriggeringRefused(ua.StatusCodes.BadNothingToDo)
    subscription = subscriptions.get(params.SubscriptionId)
    if subscription is None or subscription.session_id != session_id:
        raise TriggeringRefused(ua.StatusCodes.BadSubscriptionIdInvalid)
    service = subscription.monitored_item_srv
    items = service._monitored_items
    if params.TriggeringItemId not in items:
        raise TriggeringRefused(ua.StatusCodes.BadMonitoredItemIdInvalid)
    linked = _links(service).setdefault(params.TriggeringItemId, [])
    result = ua.SetTriggeringResult()
    result.AddResults = []
    for mid in params.LinksToAdd or []:
        if mid not in items:
            result.AddResults.append(_INVALID_ITEM)
            continue
        if mid not in linked:
            linked.append(mid)
        result.AddResults.append(_GOOD)
    result.RemoveResults = []
    for mid in params.LinksToRemove or []:
        if mid in linked:
            linked.remove(mid)
            result.RemoveResults.append(_GOOD)
        else:
            result.RemoveResults.append(_INVALID_ITEM)
    if not linked:
        _links(service).pop(params.TriggeringItemId, None)
    return result


def held(mdata: Any, notification: ua.MonitoredItemNotification) -> bool:
    """Keep `notification` if its item is in Sampling mode (True: do not report it now)."""
    if mdata.mode != ua.MonitoringMode.Sampling:
        return False
    kept: list[ua.MonitoredItemNotification] | None = getattr(mdata, "mes_held", None)
    if kept is None:
        kept = mdata.mes_held = []
    kept.append(notification)
    size = max(int(mdata.queue_size or 1), 1)
    if len(kept) > size:
        del kept[:len(kept) - size]  # the oldest go (DiscardOldest)
    return True


async def fire(service: Any, mid: int) -> None:
    """Item `mid` reported: its linked items in Sampling mode report what they kept."""
    links: dict[int, list[int]] | None = getattr(service, "mes_links", None)
    if not links or mid not in links:
        return
    items = service._monitored_items
    linked = links[mid]
    for other in list(linked):
        mdata = items.get(other)
        if mdata is None:
            linked.remove(other)
            continue
        kept = getattr(mdata, "mes_held", None)
        if mdata.mode != ua.MonitoringMode.Sampling or not kept:
            continue
        mdata.mes_held = []
        for notification in kept:
            await service.isub.enqueue_datachange_event(other, notification, mdata.queue_size)
