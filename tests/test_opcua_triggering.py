"""SetTriggering (mes/opcua/triggering.py, served by mes/opcua/security.py) against an
asyncua server and client on loopback: a linked item in Sampling mode reports only when its
triggering item reports; links are removed; bad requests are refused as Part 4 says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from asyncua import Client, Node, Server, ua
from asyncua.common.subscription import Subscription
from asyncua.ua.ua_binary import struct_from_binary

from mes.opcua.security import FarmRuleset
from mes.opcua.speedups import install_speedups
from tests.farm_helpers import eventually
from tests.ports import free_port

NS_URI = "http://mes-printfarm.org/UA/TriggeringTest/"


@dataclass
class Rig:
    server: Server
    client: Client
    trigger: Node  # server side
    sampled: Node
    subscription: Subscription
    seen: list[tuple[str, Any]]
    ids: dict[str, int]  # monitored item ids


class Recorder:
    def __init__(self, names: dict[ua.NodeId, str], seen: list[tuple[str, Any]]) -> None:
        self.names, self.seen = names, seen

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.seen.append((self.names[node.nodeid], value))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    install_speedups()
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/triggering/"
    server.set_endpoint(url)
    # The farm's rules of which requests a session may make (SetTriggering among them).
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity],
                               permission_ruleset=FarmRuleset())
    ns = await server.register_namespace(NS_URI)
    objects = server.nodes.objects
    trigger = await objects.add_variable(ua.NodeId("trigger", ns), "Trigger",
                                         ua.Variant(0, ua.VariantType.Int32))
    sampled = await objects.add_variable(ua.NodeId("sampled", ns), "Sampled",
                                         ua.Variant(100, ua.VariantType.Int32))
    async with server:
        client = Client(url, timeout=10)
        async with client:
            seen: list[tuple[str, Any]] = []
            names = {trigger.nodeid: "trigger", sampled.nodeid: "sampled"}
            subscription = await client.create_subscription(20, Recorder(names, seen))
            ids = {
                "trigger": await subscription.subscribe_data_change(
                    client.get_node(trigger.nodeid), queuesize=10),
                "sampled": await subscription.subscribe_data_change(
                    client.get_node(sampled.nodeid), queuesize=3,
                    monitoring=ua.MonitoringMode.Sampling)}
            yield Rig(server, client, trigger, sampled, subscription, seen, ids)


async def _set_triggering(rig: Rig, triggering: int, add: list[int], remove: list[int],
                          subscription: int | None = None) -> ua.SetTriggeringResponse:
    request = ua.SetTriggeringRequest()
    request.Parameters.SubscriptionId = (rig.subscription.subscription_id
                                         if subscription is None else subscription)
    request.Parameters.TriggeringItemId = triggering
    request.Parameters.LinksToAdd = add
    request.Parameters.LinksToRemove = remove
    data = await rig.client.uaclient.protocol.send_request(request)
    response: ua.SetTriggeringResponse = struct_from_binary(ua.SetTriggeringResponse, data)
    return response


async def _refused(rig: Rig, triggering: int, add: list[int], remove: list[int],
                   subscription: int | None = None) -> str:
    """The status a refused SetTriggering request is answered with (a ServiceFault)."""
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await _set_triggering(rig, triggering, add, remove, subscription)
    return ua.StatusCode(refused.value.code).name


async def test_a_sampled_item_reports_when_its_trigger_reports(rig: Rig) -> None:
    async def first_trigger() -> bool:
        return ("trigger", 0) in rig.seen

    await eventually(first_trigger, 10, "the triggering item's first value")
    answer = await _set_triggering(rig, rig.ids["trigger"], [rig.ids["sampled"]], [])
    assert answer.ResponseHeader.ServiceResult.is_good(), answer.ResponseHeader
    assert [r.name for r in answer.Parameters.AddResults] == ["Good"]
    assert answer.Parameters.RemoveResults == []
    # Sampled values are kept (the newest QueueSize = 3), not reported.
    for value in (101, 102, 103, 104):
        await rig.sampled.write_value(ua.Variant(value, ua.VariantType.Int32))
    await rig.trigger.write_value(ua.Variant(1, ua.VariantType.Int32))

    async def triggered() -> bool:
        return ("sampled", 104) in rig.seen

    await eventually(triggered, 10, "the sampled values after the trigger reported")
    sampled = [v for name, v in rig.seen if name == "sampled"]
    assert sampled == [102, 103, 104], rig.seen  # 100 and 101 were discarded (oldest)
    assert rig.seen.index(("trigger", 1)) < rig.seen.index(("sampled", 102))
    # Nothing kept: another trigger reports no sampled value.
    await rig.trigger.write_value(ua.Variant(2, ua.VariantType.Int32))

    async def second() -> bool:
        return ("trigger", 2) in rig.seen

    await eventually(second, 10, "the trigger's second value")
    assert [v for name, v in rig.seen if name == "sampled"] == [102, 103, 104]
    # Unlinked: a sampled value stays kept when the trigger reports.
    removed = await _set_triggering(rig, rig.ids["trigger"], [], [rig.ids["sampled"]])
    assert [r.name for r in removed.Parameters.RemoveResults] == ["Good"]
    await rig.sampled.write_value(ua.Variant(105, ua.VariantType.Int32))
    await rig.trigger.write_value(ua.Variant(3, ua.VariantType.Int32))

    async def third() -> bool:
        return ("trigger", 3) in rig.seen

    await eventually(third, 10, "the trigger's third value")
    assert ("sampled", 105) not in rig.seen


async def test_bad_set_triggering_requests(rig: Rig) -> None:
    trigger, sampled = rig.ids["trigger"], rig.ids["sampled"]
    assert await _refused(rig, trigger, [], []) == "BadNothingToDo"
    assert await _refused(rig, trigger, [sampled], [], subscription=987_654) == (
        "BadSubscriptionIdInvalid")
    assert await _refused(rig, 987_654, [sampled], []) == "BadMonitoredItemIdInvalid"
    mixed = await _set_triggering(rig, trigger, [sampled, 987_654], [987_655])
    assert mixed.ResponseHeader.ServiceResult.is_good()
    assert [r.name for r in mixed.Parameters.AddResults] == [
        "Good", "BadMonitoredItemIdInvalid"]
    assert [r.name for r in mixed.Parameters.RemoveResults] == ["BadMonitoredItemIdInvalid"]
