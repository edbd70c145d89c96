"""DataChangeFilter deadbands (mes/opcua/deadbands.py through mes/opcua/speedups.py) against
an asyncua server and client on loopback: absolute and percent (EURange) deadbands around
the last value reported, and the filters Part 4 refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from asyncua import Client, Node, Server, ua

from mes.opcua.speedups import install_speedups
from tests.farm_helpers import eventually
from tests.ports import free_port

NS_URI = "http://mes-printfarm.org/UA/DeadbandTest/"


@dataclass
class Rig:
    server: Server
    client: Client
    analog: Node  # a Double with EURange 0..300 (as the printers' nozzle temperatures)
    plain: Node  # a Double without EURange
    text: Node  # a String


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    install_speedups()
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/deadbands/"
    server.set_endpoint(url)
    ns = await server.register_namespace(NS_URI)
    objects = server.nodes.objects
    analog = await objects.add_variable(ua.NodeId("analog", ns), "Analog",
                                        ua.Variant(200.0, ua.VariantType.Double))
    await analog.add_property(ua.NodeId("analog/EURange", ns), "EURange",
                              ua.Variant(ua.Range(0.0, 300.0), ua.VariantType.ExtensionObject))
    plain = await objects.add_variable(ua.NodeId("plain", ns), "Plain",
                                       ua.Variant(5.0, ua.VariantType.Double))
    text = await objects.add_variable(ua.NodeId("text", ns), "Text",
                                      ua.Variant("idle", ua.VariantType.String))
    async with server:
        client = Client(url, timeout=10)
        async with client:
            yield Rig(server, client, client.get_node(analog.nodeid),
                      client.get_node(plain.nodeid), client.get_node(text.nodeid))


class Values:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.seen.append(value)


def deadband(kind: ua.DeadbandType, value: float) -> ua.DataChangeFilter:
    return ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=kind,
                               DeadbandValue=value)


async def monitor(rig: Rig, node: Node, flt: ua.DataChangeFilter, handler: Values
                  ) -> ua.StatusCode:
    """Monitor `node`'s value with `flt`: the item's status."""
    subscription = await rig.client.create_subscription(20, handler)
    params = ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=ua.MonitoringParameters(ClientHandle=1, QueueSize=100,
                                                    SamplingInterval=0, Filter=flt))
    created = (await subscription.create_monitored_items([params]))[0]
    return created if isinstance(created, ua.StatusCode) else ua.StatusCode()


async def write_all(rig: Rig, node: Node, values: list[float]) -> None:
    server_node = rig.server.get_node(node.nodeid)
    for value in values:
        await server_node.write_value(ua.Variant(value, ua.VariantType.Double))
        await asyncio.sleep(0.03)  # paces the writes past the publishing interval


async def test_an_absolute_deadband_follows_the_last_value_reported(rig: Rig) -> None:
    values = Values()
    assert (await monitor(rig, rig.plain, deadband(ua.DeadbandType.Absolute, 1.0),
                          values)).is_good()
    # A drift of 0.4 per write: asyncua compared each with the one before and never reported.
    await write_all(rig, rig.plain, [5.4, 5.8, 6.2, 6.6, 7.0, 7.4, 7.3])

    async def settled() -> bool:
        return values.seen[-1:] == [7.4]

    await eventually(settled, 10, "the values beyond 1.0 from the last reported")
    await write_all(rig, rig.plain, [7.3])  # within 1.0 of 7.4: nothing
    await rig.server.get_node(rig.text.nodeid).write_value("sentinel")
    assert values.seen == [5.0, 6.2, 7.4], values.seen


async def test_a_percent_deadband_is_a_share_of_the_eu_range(rig: Rig) -> None:
    values = Values()
    # 2 % of 0..300 °C: 6 °C.
    assert (await monitor(rig, rig.analog, deadband(ua.DeadbandType.Percent, 2.0),
                          values)).is_good()
    await write_all(rig, rig.analog, [203.0, 205.9, 206.5, 209.0, 212.6, 190.0])

    async def last() -> bool:
        return values.seen[-1:] == [190.0]

    await eventually(last, 10, "the drop to 190")
    assert values.seen == [200.0, 206.5, 212.6, 190.0], values.seen


@pytest.mark.parametrize(("node", "flt", "status"), [
    ("plain", deadband(ua.DeadbandType.Percent, 2.0), "BadDeadbandFilterInvalid"),
    ("analog", deadband(ua.DeadbandType.Percent, 150.0), "BadDeadbandFilterInvalid"),
    ("analog", deadband(ua.DeadbandType.Absolute, -1.0), "BadDeadbandFilterInvalid"),
    ("text", deadband(ua.DeadbandType.Absolute, 1.0), "BadFilterNotAllowed"),
])
async def test_filters_part_4_does_not_allow_are_refused(
        rig: Rig, node: str, flt: ua.DataChangeFilter, status: str) -> None:
    assert (await monitor(rig, getattr(rig, node), flt, Values())).name == status
