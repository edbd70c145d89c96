"""mes/opcua/speedups.py: pinned upstream, same notifications, and the CPU it saves."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncua
import pytest
from asyncua import Client, Server, ua
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues

from mes.opcua import speedups
from mes.opcua.speedups import (
    ORIGINAL_SOURCE_SHA256,
    install_speedups,
    snapshot_datavalue,
    source_sha256,
    speedups_installed,
    uninstall_speedups,
)
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
NS_URI = "http://mes-printfarm.org/UA/SpeedupsTest/"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def no_speedups() -> Iterator[None]:
    """Each test starts and ends with asyncua's own functions."""
    uninstall_speedups()
    yield
    uninstall_speedups()


# --- (a) the replaced functions are still the ones the replacements were written for ----------

def test_asyncua_is_the_pinned_version() -> None:
    assert asyncua.__version__ == speedups.ASYNCUA_VERSION == "2.1.0"


def test_replaced_upstream_functions_are_unchanged(no_speedups: None) -> None:
    live = {
        "MonitoredItemValues.set_current_datavalue": MonitoredItemValues.set_current_datavalue,
        "MonitoredItemService.datachange_callback": MonitoredItemService.datachange_callback,
        "MonitoredItemService._create_data_change_monitored_item":
            MonitoredItemService._create_data_change_monitored_item,
    }
    assert {name: source_sha256(function) for name, function in live.items()} == {
        "MonitoredItemValues.set_current_datavalue":
            "df9d5e87226514b2e2512f5a9f4e1a54f350b6f0e57b890b4dcfc1d5d2c731d5",
        "MonitoredItemService.datachange_callback":
            "d4468698f4d16058fe297b56f9900b9cd5883027bda8c94ce90b724c9045ea3b",
        "MonitoredItemService._create_data_change_monitored_item":
            "33bdd22321c59eaa8053e8b8105ace1bab8aa0f19c7cef7d34b1ffb86374d149",
    } == ORIGINAL_SOURCE_SHA256
    assert speedups.upstream_mismatches() == []


def test_install_is_idempotent_and_reversible(no_speedups: None) -> None:
    original = MonitoredItemValues.set_current_datavalue
    install_speedups()
    first = MonitoredItemValues.set_current_datavalue
    install_speedups()
    assert speedups_installed()
    assert MonitoredItemValues.set_current_datavalue is first is not original
    assert speedups.upstream_mismatches() == []  # still checks the originals, not ours
    uninstall_speedups()
    assert not speedups_installed()
    assert MonitoredItemValues.set_current_datavalue is original


def test_another_asyncua_is_left_alone(no_speedups: None, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(asyncua, "__version__", "2.2.0")
    with caplog.at_level(logging.WARNING, logger="mes.opcua.speedups"):
        install_speedups()
    assert not speedups_installed()
    assert "asyncua 2.2.0 is installed, not 2.1.0" in caplog.text


# --- the snapshot is a deep copy where it matters --------------------------------------------

SAMPLES = [
    ua.DataValue(ua.Variant(21.5, ua.VariantType.Double), SourceTimestamp=T0, ServerTimestamp=T0),
    ua.DataValue(ua.Variant(7, ua.VariantType.Int32), ua.StatusCode(ua.StatusCodes.Uncertain)),
    ua.DataValue(ua.Variant("PLA_black", ua.VariantType.String), SourcePicoseconds=5),
    ua.DataValue(ua.Variant(None, ua.VariantType.Null),
                 ua.StatusCode(ua.StatusCodes.BadSensorFailure)),
    ua.DataValue(ua.Variant(b"\x00\x01", ua.VariantType.ByteString)),
    ua.DataValue(ua.Variant(T0, ua.VariantType.DateTime)),
    ua.DataValue(ua.Variant(uuid.UUID(int=5), ua.VariantType.Guid)),
    ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)),
    ua.DataValue(ua.Variant([1, 2, 3], ua.VariantType.Int32)),
    ua.DataValue(ua.Variant([[1.0, 2.0], [3.0, 4.0]], ua.VariantType.Double)),
    ua.DataValue(ua.Variant(ua.LocalizedText("x"), ua.VariantType.LocalizedText)),
    ua.DataValue(ua.Variant(ua.NodeId(5, 2), ua.VariantType.NodeId)),
    ua.DataValue(ua.Variant(ua.Range(0.0, 300.0), ua.VariantType.ExtensionObject)),
    ua.DataValue(),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: str(v.Value.VariantType))
def test_snapshot_equals_deepcopy(value: ua.DataValue) -> None:
    snap = snapshot_datavalue(value)
    assert snap == copy.deepcopy(value) == value
    assert snap is not value and snap.Value is not value.Value
    assert (snap.Encoding, snap.SourcePicoseconds, snap.ServerPicoseconds) == (
        value.Encoding, value.SourcePicoseconds, value.ServerPicoseconds)
    assert snap.Value is not None and value.Value is not None
    assert (snap.Value.is_array, snap.Value.Dimensions) == (value.Value.is_array,
                                                            value.Value.Dimensions)


def test_snapshot_survives_changes_to_the_written_value() -> None:
    scalar = ua.DataValue(ua.Variant(1.0, ua.VariantType.Double))
    snap = snapshot_datavalue(scalar)
    assert scalar.Value is not None
    scalar.Value.Value = 2.0
    scalar.SourceTimestamp = T0
    assert snap.Value == ua.Variant(1.0, ua.VariantType.Double) and snap.SourceTimestamp is None
    array = ua.DataValue(ua.Variant([1, 2], ua.VariantType.Int32))
    snap = snapshot_datavalue(array)
    assert array.Value is not None
    array.Value.Value.append(3)
    assert snap.Value == ua.Variant([1, 2], ua.VariantType.Int32)


# --- (b) a subscribed client sees the same notifications with and without --------------------

Received = tuple[str, Any, int, int, datetime | None, datetime | None]


class _Recorder:
    def __init__(self, names: dict[ua.NodeId, str], done: asyncio.Event) -> None:
        self.names = names
        self.done = done
        self.received: list[Received] = []

    def datachange_notification(self, node: asyncua.Node, val: Any, data: Any) -> None:
        dv: ua.DataValue = data.monitored_item.Value
        name = self.names[node.nodeid]
        variant_type = dv.Value.VariantType.value if dv.Value is not None else -1
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        self.received.append((name, val, variant_type, status, dv.SourceTimestamp,
                              dv.ServerTimestamp))
        if name == "sentinel" and val == 1:
            self.done.set()


@pytest.fixture
async def opcua_server() -> AsyncIterator[tuple[Server, int, str]]:
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/speedups"
    server.set_endpoint(endpoint)
    ns = await server.register_namespace(NS_URI)
    await server.start()
    try:
        yield server, ns, endpoint
    finally:
        await server.stop()


def _dv(value: Any, vtype: ua.VariantType, second: int,
        status: int = ua.StatusCodes.Good) -> ua.DataValue:
    stamp = T0 + timedelta(seconds=second)
    return ua.DataValue(ua.Variant(value, vtype), ua.StatusCode(status),
                        SourceTimestamp=stamp, ServerTimestamp=stamp + timedelta(milliseconds=3))


async def _notifications(server: Server, ns: int, endpoint: str) -> list[Received]:
    """Subscribe to five variables, write a fixed sequence, and return what the client got."""
    objects = server.nodes.objects
    double = await objects.add_variable(ns, "Double", 0.0, ua.VariantType.Double)
    text = await objects.add_variable(ns, "Text", "", ua.VariantType.String)
    array = await objects.add_variable(ns, "Array", [0], ua.VariantType.Int32)
    banded = await objects.add_variable(ns, "Banded", 0.0, ua.VariantType.Double)
    sentinel = await objects.add_variable(ns, "Sentinel", 0, ua.VariantType.Int32)
    for node, (initial_value, vtype) in {
            double: (0.0, ua.VariantType.Double), text: ("", ua.VariantType.String),
            array: ([0], ua.VariantType.Int32), banded: (0.0, ua.VariantType.Double),
            sentinel: (0, ua.VariantType.Int32)}.items():
        await server.write_attribute_value(node.nodeid, _dv(initial_value, vtype, 0))
    names = {double.nodeid: "double", text.nodeid: "text", array.nodeid: "array",
             banded.nodeid: "banded", sentinel.nodeid: "sentinel"}
    done = asyncio.Event()
    recorder = _Recorder(names, done)
    async with Client(endpoint, timeout=30) as client:
        subscription = await client.create_subscription(20, recorder)
        await subscription.subscribe_data_change(
            [client.get_node(n) for n in (double.nodeid, text.nodeid, array.nodeid,
                                          sentinel.nodeid)], queuesize=100)
        await subscription.deadband_monitor(client.get_node(banded.nodeid), 1.0, queuesize=100)
        initial = len(names)
        await asyncio.wait_for(_until(lambda: len(recorder.received) >= initial), 10)

        write = server.write_attribute_value
        double_type, text_type = ua.VariantType.Double, ua.VariantType.String
        await write(double.nodeid, _dv(1.0, double_type, 1))
        await write(double.nodeid, _dv(1.0, double_type, 2))  # same value: no notification
        await write(double.nodeid, _dv(2.5, double_type, 3))
        await write(double.nodeid, _dv(2.5, double_type, 4, ua.StatusCodes.BadSensorFailure))
        await write(double.nodeid, _dv(3.0, double_type, 5))
        reused = _dv(4.0, double_type, 6)
        await write(double.nodeid, reused)
        reused.Value = ua.Variant(5.0, double_type)  # the same object written again, changed
        await write(double.nodeid, reused)
        for second, word in enumerate(["a", "a", "b", "", "c"], start=10):
            await write(text.nodeid, _dv(word, text_type, second))
        listed = _dv([1, 2, 3], ua.VariantType.Int32, 20)
        await write(array.nodeid, listed)
        assert listed.Value is not None
        listed.Value.Value[2] = 4  # changed in place and written again
        await write(array.nodeid, listed)
        await write(array.nodeid, _dv([1, 2, 4], ua.VariantType.Int32, 21))
        for second, number in enumerate([10.0, 10.5, 11.5, 13.0, 12.5, 11.0], start=30):
            await write(banded.nodeid, _dv(number, double_type, second))
        await write(sentinel.nodeid, _dv(1, ua.VariantType.Int32, 40))
        await asyncio.wait_for(done.wait(), 10)
    return recorder.received


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_subscriber_sees_the_same_notifications(
        no_speedups: None, opcua_server: tuple[Server, int, str]) -> None:
    server, ns, endpoint = opcua_server
    plain = await _notifications(server, ns, endpoint)
    install_speedups()
    fast = await _notifications(server, ns, endpoint)
    # Deadbands differ on purpose (mes/opcua/deadbands.py): the rest is the same.
    assert [r for r in fast if r[0] != "banded"] == [r for r in plain if r[0] != "banded"]

    def values(name: str, rows: list[Any] = fast) -> list[Any]:
        return [(value, status) for got, value, _, status, _, _ in rows if got == name]

    bad = ua.StatusCodes.BadSensorFailure
    good = ua.StatusCodes.Good
    assert values("double") == [(0.0, good), (1.0, good), (2.5, good), (None, bad), (3.0, good),
                                # the queued notification holds the written object (upstream too)
                                (5.0, good), (5.0, good)]
    assert values("text") == [(v, good) for v in ["", "a", "b", "", "c"]]
    # changed in place after the first write: a notification (the snapshot is a deep copy), both
    # carrying the changed list; the third write equals the second: none
    assert values("array") == [([0], good), ([1, 2, 4], good), ([1, 2, 4], good)]
    # 10.0, 10.5, 11.5, 13.0, 12.5, 11.0 with an absolute deadband of 1.0: upstream compares
    # each with the value written before it, the speed-ups with the last value reported.
    assert values("banded", plain) == [(0.0, good), (10.0, good), (13.0, good), (11.0, good)]
    assert values("banded") == [(0.0, good), (10.0, good), (11.5, good), (13.0, good),
                                (11.0, good)]
    last_double = [row for row in fast if row[0] == "double"][-1]
    assert last_double[4:] == (T0 + timedelta(seconds=6),
                               T0 + timedelta(seconds=6, milliseconds=3))


# --- (c) the CPU a loaded server spends, with and without ------------------------------------

LOAD_VARIABLES = 1000
LOAD_ROUNDS = 5


async def load_server(port: int, variables: int, rounds: int, fast: bool) -> None:
    """Serve `variables` Doubles; on "go" on stdin, write each once a second `rounds` times.

    Prints "ready" when listening, then one JSON line: CPU seconds spent while writing.
    """
    if fast:
        install_speedups()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/load")
    ns = await server.register_namespace(NS_URI)
    folder = await server.nodes.objects.add_folder(ns, "Load")
    nodes = [await folder.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", 0.0)
             for i in range(variables)]
    await server.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu, wall = time.process_time(), time.monotonic()
    for round_number in range(1, rounds + 1):
        started = time.monotonic()
        stamp = datetime.now(UTC)
        for index, node in enumerate(nodes):
            await server.write_attribute_value(node.nodeid, ua.DataValue(
                ua.Variant(float(round_number), ua.VariantType.Double),
                SourceTimestamp=stamp, ServerTimestamp=stamp))
            if index % 100 == 99:
                await asyncio.sleep(0)
        # The load's pace: one write of every variable per second.
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    result = {"cpu": time.process_time() - cpu, "wall": time.monotonic() - wall,
              "speedups": speedups_installed()}
    print(json.dumps(result), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await server.stop()


class _Latest:
    def __init__(self) -> None:
        self.latest: dict[str, float] = {}
        self.count = 0

    def datachange_notification(self, node: asyncua.Node, val: Any, data: Any) -> None:
        self.latest[str(node.nodeid.Identifier)] = val
        self.count += 1


async def _measure(fast: bool) -> dict[str, Any]:
    port = free_port()
    code = ("import asyncio, sys; from tests.test_opcua_speedups import load_server; "
            f"asyncio.run(load_server({port}, {LOAD_VARIABLES}, {LOAD_ROUNDS}, {fast}))")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=REPO, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
        handler = _Latest()
        async with Client(f"opc.tcp://127.0.0.1:{port}/load", timeout=30,
                          watchdog_intervall=10) as client:
            ns = await client.get_namespace_index(NS_URI)
            subscription = await client.create_subscription(500, handler)
            await subscription.subscribe_data_change(
                [client.get_node(ua.NodeId(f"v{i}", ns)) for i in range(LOAD_VARIABLES)])
            await asyncio.wait_for(_until(lambda: len(handler.latest) == LOAD_VARIABLES), 30)
            initial = handler.count
            process.stdin.write(b"go\n")
            line = await asyncio.wait_for(process.stdout.readline(), LOAD_ROUNDS + 60)
            result: dict[str, Any] = json.loads(line)
            await asyncio.wait_for(_until(lambda: all(
                value == LOAD_ROUNDS for value in handler.latest.values())), 10)
            result["notifications"] = handler.count - initial
        process.stdin.write(b"stop\n")
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return result


async def test_cpu_of_a_loaded_server_with_and_without() -> None:
    plain = await _measure(fast=False)
    fast = await _measure(fast=True)
    assert (plain["speedups"], fast["speedups"]) == (False, True)
    writes = LOAD_VARIABLES * LOAD_ROUNDS
    for result in (plain, fast):
        # Every write changes the value: the subscriber gets all or, at 500 ms, the latest.
        assert LOAD_VARIABLES <= result["notifications"] <= writes
    print(f"\n{LOAD_VARIABLES} variables written once a second for {LOAD_ROUNDS} s, one subscriber "
          f"at 500 ms: server CPU {plain['cpu']:.2f} s without speed-ups "
          f"({100 * plain['cpu'] / plain['wall']:.0f}% of a core, "
          f"{plain['notifications']} notifications), {fast['cpu']:.2f} s with "
          f"({100 * fast['cpu'] / fast['wall']:.0f}%, {fast['notifications']})")
