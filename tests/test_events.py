"""GET /api/v1/events on one node: ids in order, resume, reload, role filter, keep-alive,
disconnect and shutdown, a slow client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.events.hub import (
    EventHub,
    StreamEvent,
    Subscriber,
    TelemetryView,
    parse_id,
    visible_to,
)
from mes.node import FarmNode
from mes.state.ops import Op
from tests.accounts import make_user
from tests.auth import admin_headers
from tests.farm_helpers import SINGLE_NODE, eventually, farm_settings, upload
from tests.live_server import serving
from tests.sse_client import open_stream


@pytest.fixture
async def live(tmp_path: Path, request: pytest.FixtureRequest
               ) -> AsyncIterator[tuple[FarmNode, httpx.AsyncClient]]:
    overrides: dict[str, Any] = {"sse_keepalive": 0.3, "sse_resume_wait": 0.5,
                                 "auto_schedule": False, **getattr(request, "param", {})}
    node = FarmNode(farm_settings(tmp_path, **overrides), tuning=SINGLE_NODE)
    try:
        async with serving(node) as url, httpx.AsyncClient(
                base_url=url, headers=admin_headers(), timeout=10.0) as client:
            await eventually(lambda: _ready(client), 10, "the node to lead")
            yield node, client
    finally:
        node.close()


async def _ready(client: httpx.AsyncClient) -> bool:
    """The node leads and its start-up commands are applied (its first lease among them):
    the farm's own events then no longer come between a test's changes."""
    if (await client.get("/api/v1/users/me")).status_code != 200:
        return False
    view = (await client.get("/api/v1/cluster")).json()
    me = next((n for n in view["nodes"] if n.get("self")), {})
    lease = me.get("lease")
    return bool(lease) and not lease["expired"]


def key(event_id: str | None) -> tuple[int, int]:
    assert event_id is not None
    parsed = parse_id(event_id)
    assert parsed is not None
    return parsed


async def spool(client: httpx.AsyncClient, spool_id: str) -> None:
    response = await client.post("/api/v1/filaments", json={
        "id": spool_id, "type": "PLA", "color": "red", "total_weight_in_grams": 1000})
    assert response.status_code == 201, response.text


async def test_events_arrive_in_order_with_ids_and_the_right_headers(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, client = live
    async with open_stream(client) as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        hello = await stream.next()
        assert hello is not None and hello.event == "hello"
        assert stream.retry == 2000
        await spool(client, "s1")
        created = await client.post("/api/v1/printers", json={"id": "p1", "model": "MK4"})
        assert created.status_code == 201
        job = await client.post("/api/v1/print_jobs", json={
            "id": "j1", "filament_id": "s1", "filepath": "a.gcode",
            "print_weight_in_grams": 5})
        assert job.status_code == 201
        events = await stream.until(lambda e: e["entity"] == "print_job")
    # The farm's own commands (a node's first lease, the balancer placing p1) may come in
    # between: the order of the test's own changes is what counts.
    ours = ("filament", "printer", "print_job")
    seen = [(e.json()["entity"], e.json()["id"], e.json()["change"]) for e in events
            if e.json()["entity"] in ours]
    assert seen[0] == ("filament", "s1", "created")
    assert ("printer", "p1", "created") in seen
    assert seen[-1] == ("print_job", "j1", "created")
    keys = [key(e.id) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(k > key(hello.id) for k in keys)
    payload = events[-1].json()
    assert payload["op"] == Op.JOB_CREATE and payload["index"] == keys[-1][0]
    assert payload["data"]["owner_id"] == "admin" and payload["data"]["status"] == "Queued"
    printer = next(e.json() for e in events if e.json()["entity"] == "printer")
    assert printer["data"]["model"] == "MK4" and "api_key" not in printer["data"]


async def test_resume_with_last_event_id_returns_exactly_the_missed_events(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, client = live
    async with open_stream(client) as witness:  # open throughout: the truth
        await witness.next()
        async with open_stream(client) as first:
            hello = await first.next()
            assert hello is not None
            await spool(client, "a0")
            (seen,) = await first.changes(1)
        for n in range(1, 6):  # while no stream of this client is open
            await spool(client, f"a{n}")
        truth = await witness.until(lambda e: e["id"] == "a5")
        for last in (seen.id, hello.id):
            async with open_stream(client, headers={"Last-Event-ID": str(last)}) as resumed:
                got = await resumed.until(lambda e: e["id"] == "a5")
            expected = [e for e in truth if key(e.id) > key(last)]
            assert [(e.id, e.data) for e in got] == [(e.id, e.data) for e in expected]
        assert [e.json()["id"] for e in expected] == [f"a{n}" for n in range(6)]
        # the query parameter works as the header does
        async with open_stream(client, params={"after": str(seen.id)}) as resumed:
            got = await resumed.until(lambda e: e["id"] == "a5")
        assert [e.json()["id"] for e in got] == [f"a{n}" for n in range(1, 6)]


@pytest.mark.parametrize("live", [{"sse_window": 5}], indirect=True)
async def test_an_id_older_than_the_window_or_not_yet_reached_tells_the_client_to_reload(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    node, client = live
    async with open_stream(client) as stream:
        await stream.next()
        await spool(client, "old")
        (first,) = await stream.changes(1)
        for n in range(6):
            await spool(client, f"new{n}")
        await stream.until(lambda e: e["id"] == "new5")
    for last in (str(first.id), f"{node.events.last_index + 1000}-0", "garbage"):
        async with open_stream(client, headers={"Last-Event-ID": last}) as resumed:
            message = await resumed.next()
            assert message is not None and message.event == "reload", (last, message)
            assert await resumed.next() is None  # and the stream ends


async def test_a_user_sees_printers_spools_and_their_own_jobs_only(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, client = live
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    await spool(client, "shared")
    async with open_stream(client, headers=alice) as alice_stream, \
            open_stream(client) as admin_stream:
        await alice_stream.next()
        await admin_stream.next()
        for who, job_id in ((bob, "bobs"), (alice, "alices")):
            response = await client.post("/api/v1/print_jobs", headers=who, json={
                "id": job_id, "filament_id": "shared", "filepath": "x.gcode",
                "print_weight_in_grams": 1})
            assert response.status_code == 201, response.text
        await client.post("/api/v1/users", json={"id": "carol", "name": "carol"})
        await client.post("/api/v1/printers", json={"id": "marker"})
        got = await alice_stream.until(lambda e: e["id"] == "marker")
        everything = await admin_stream.until(lambda e: e["id"] == "marker")
    entities = {(e.json()["entity"], e.json()["id"]) for e in got}
    assert ("print_job", "alices") in entities
    assert ("print_job", "bobs") not in entities
    assert not {e for e, _ in entities} & {"user", "api_token", "delivery", "webhook"}
    assert ("filament", "shared") in entities
    admin_entities = {(e.json()["entity"], e.json()["id"]) for e in everything}
    assert {("print_job", "bobs"), ("user", "carol")} <= admin_entities


async def test_keep_alive_comments_and_a_closed_client_frees_its_subscriber(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    node, client = live
    async with open_stream(client) as stream:
        await stream.next()
        assert node.events.subscribers == 1

        async def kept_alive() -> bool:
            return "keep-alive" in stream.comments

        # next() ends on a message; read with a short timeout until a comment came
        while "keep-alive" not in stream.comments:
            with contextlib.suppress(TimeoutError):
                await stream.next(timeout=0.5)
        assert await kept_alive()

    async def freed() -> bool:
        return node.events.subscribers == 0

    await eventually(freed, 5, "the subscriber of a closed stream to be dropped")


async def test_a_revoked_token_ends_the_stream(live: tuple[FarmNode, httpx.AsyncClient]
                                               ) -> None:
    _node, client = live
    created = await client.post("/api/v1/tokens", json={"name": "watcher"})
    token = created.json()
    async with open_stream(client, headers={"Authorization": f"Bearer {token['token']}"}
                           ) as stream:
        await stream.next()
        assert (await client.delete(f"/api/v1/tokens/{token['id']}")).status_code == 200
        message = await stream.next()
        while message is not None and message.event != "reload":
            message = await stream.next()
        assert message is not None and "token" in message.json()["reason"]


async def test_server_shutdown_ends_open_streams(live: tuple[FarmNode, httpx.AsyncClient]
                                                 ) -> None:
    node, client = live
    async with open_stream(client) as stream:
        await stream.next()
        node.events.close()
        assert await stream.next() is None  # ended, without a reload: resume elsewhere


def _event(index: int, entity: str = "filament", owner: str | None = None) -> StreamEvent:
    return StreamEvent((index, 0), entity, f"e{index}", owner, "{}")


async def test_a_slow_client_is_bounded_and_told_to_reload() -> None:
    subscriber = Subscriber(visible_to("u", staff=True), telemetry=True, capacity=3)
    subscriber.offer([_event(i) for i in range(1, 4)])
    assert subscriber.reload is None and len(subscriber.queue) == 3
    subscriber.offer([_event(4)])
    assert subscriber.reload is not None and len(subscriber.queue) == 3
    # telemetry is coalesced: the latest per printer, whatever the rate
    telemetry = [StreamEvent(None, "printer_status", f"p{i % 2}", None, str(i))
                 for i in range(1000)]
    subscriber.offer(telemetry)
    assert [e.data for e in subscriber.latest.values()] == ["998", "999"]


async def test_the_window_is_bounded_and_knows_its_horizon() -> None:
    hub = EventHub(lambda query: None, window=3, capacity=10)
    from mes.state.context import ChangeEvent
    from mes.state.machine import Outcome

    for index in range(10, 16):
        hub.on_apply({"op": Op.FILAMENT_UPDATE, "ts": 1.0}, Outcome(
            value={}, events=(ChangeEvent("filament", "f", "updated"),), index=index))
    assert hub.last_index == 15
    sub = Subscriber(visible_to("u", staff=False), telemetry=False, capacity=10)
    backlog, reason = hub.subscribe(sub, (13, 0))
    assert reason is None and [e.key for e in backlog] == [(14, 0), (15, 0)]
    backlog, reason = hub.subscribe(sub, (12, 0))
    assert reason is None and len(backlog) == 3
    _, reason = hub.subscribe(sub, (11, 0))
    assert reason is not None


async def test_telemetry_is_live_only_without_ids_and_can_be_left_out(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, client = live
    await spool(client, "t")
    async with open_stream(client) as with_telemetry, \
            open_stream(client, params={"telemetry": "false"}) as without:
        await with_telemetry.next()
        await without.next()
        response = await client.post("/api/v1/printers", json={
            "id": "m0", "api": "Mock", "url": "http://mock0:5000", "worker": True,
            "filament_id": "t"})
        assert response.status_code == 201
        message = await with_telemetry.next()
        while message is not None and message.event != "telemetry":
            message = await with_telemetry.next()
        assert message is not None and message.id is None
        data = message.json()
        assert data["entity"] == "printer_status" and data["telemetry"] is True
        assert data["id"] == "m0" and data["data"]["state"] in ("idle", "offline", "printing")
        await client.post("/api/v1/printers", json={"id": "marker"})
        seen = []
        while True:
            message = await without.next()
            assert message is not None
            seen.append(message.event)
            if message.event == "change" and message.json()["id"] == "marker":
                break
        assert "telemetry" not in seen


async def test_a_resume_waits_for_this_node_to_reach_the_id() -> None:
    import asyncio
    import threading

    from mes.state.context import ChangeEvent
    from mes.state.machine import Outcome

    hub = EventHub(lambda query: None, window=10, capacity=10)
    hub.attach(asyncio.get_running_loop())
    hub.on_apply({"op": Op.NOOP, "ts": 1.0}, Outcome(index=5))
    waiting = asyncio.create_task(hub.wait_index(7, timeout=10))
    await asyncio.sleep(0)
    assert not waiting.done()

    def apply_later() -> None:  # as pysyncobj's thread applies the entries
        for index in (6, 7):
            hub.on_apply({"op": Op.FILAMENT_UPDATE, "ts": 2.0}, Outcome(
                value={}, events=(ChangeEvent("filament", "f", "updated"),), index=index))

    threading.Thread(target=apply_later).start()
    assert await waiting is True
    assert await hub.wait_index(99, timeout=0.05) is False


@pytest.mark.parametrize("live", [{"sse_keepalive": 60.0}], indirect=True)
@pytest.mark.parametrize("change", [{"role": "user"}, {"disabled": True}])
async def test_a_demoted_or_disabled_reader_gets_nothing_applied_after_the_change(
        live: tuple[FarmNode, httpx.AsyncClient], change: dict[str, Any]) -> None:
    """Checked before the next event, not at the next keep-alive (here a minute away)."""
    _node, client = live
    olga = await make_user(client, "olga", role="operator")
    bob = await make_user(client, "bob")
    await spool(client, "shared")
    async with open_stream(client, headers=olga) as stream:
        await stream.next()
        changed = await client.patch("/api/v1/users/olga", json=change)
        assert changed.status_code == 200, changed.text
        response = await client.post("/api/v1/print_jobs", headers=bob, json={
            "id": "bobs", "filament_id": "shared", "filepath": "x.gcode",
            "print_weight_in_grams": 1})
        assert response.status_code == 201, response.text
        seen = []
        message = await stream.next(timeout=10)
        while message is not None and message.event != "reload":
            seen.append(message.json())
            message = await stream.next(timeout=10)
    assert message is not None and "rights changed" in message.json()["reason"]
    assert not [e for e in seen if e.get("id") == "bobs"], seen


def test_a_view_gets_some_printers_in_full_and_the_others_state_changes() -> None:
    view = TelemetryView(every=False, printers=frozenset({"shown"}), states=True)
    sub = Subscriber(visible_to("u", staff=True), view, capacity=10)

    def telemetry(printer: str, state: str, n: int, changed: bool) -> StreamEvent:
        return StreamEvent(None, "printer_status", printer, None, f"{printer}-{n}", state,
                           changed)

    sub.offer([telemetry("shown", "printing", 1, False), telemetry("other", "idle", 2, True)])
    assert [e.data for e in sub.take()] == ["shown-1", "other-2"]
    sub.offer([telemetry("shown", "printing", 3, False), telemetry("other", "idle", 4, False)])
    assert [e.data for e in sub.take()] == ["shown-3"]  # the other's state did not change
    sub.offer([telemetry("other", "printing", 5, True), telemetry("other", "printing", 6, False)])
    assert [e.data for e in sub.take()] == ["other-5"]  # its change is kept, not replaced
    narrow = Subscriber(visible_to("u", staff=True), TelemetryView(
        every=False, printers=frozenset({"shown"})), capacity=10)
    narrow.offer([telemetry("other", "error", 7, True), telemetry("shown", "idle", 8, True)])
    assert [e.data for e in narrow.take()] == ["shown-8"]


@pytest.mark.parametrize("live", [{"auto_schedule": True, "mock_printer_job_time": 40}],
                         indirect=True)
async def test_a_stream_asks_for_the_telemetry_it_shows(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    """`printer=` streams those printers' telemetry in full; `states=true` the others' only
    when their state changes; a printer asked for by neither sends nothing."""
    _node, client = live
    await spool(client, "t")
    async with open_stream(client, params={"printer": "m0"}) as full, \
            open_stream(client, params={"states": "true"}) as changes, \
            open_stream(client, params={"printer": "elsewhere"}) as none:
        for stream in (full, changes, none):
            await stream.next()
        response = await client.post("/api/v1/printers", json={
            "id": "m0", "api": "Mock", "url": "http://mock0:5000", "worker": True,
            "filament_id": "t"})
        assert response.status_code == 201

        async def telemetry_until_marker(stream: Any) -> list[str]:
            states = []
            while True:
                message = await stream.next()
                assert message is not None
                if message.event == "telemetry":
                    states.append(message.json()["data"]["state"])
                if message.event == "change" and message.json()["id"] == "marker":
                    return states

        stored = await upload(client)
        job = await client.post("/api/v1/print_jobs", json={
            "printer_id": "m0", "filament_id": "t", "file_id": stored["id"],
            "print_weight_in_grams": 5})
        assert job.status_code == 201, job.text
        printing_reports = 0
        while printing_reports < 3:  # progress moves: reports of the same state
            message = await full.next()
            assert message is not None
            if message.event == "telemetry" and message.json()["data"]["state"] == "printing":
                printing_reports += 1
        await client.post("/api/v1/printers", json={"id": "marker"})
        changed = await telemetry_until_marker(changes)
        assert changed.count("printing") == 1, changed  # told once, not at every report
        assert all(a != b for a, b in itertools.pairwise(changed)), changed
        assert await telemetry_until_marker(none) == []


async def test_a_stream_is_gzipped_when_asked_and_each_event_arrives_at_once(
        live: tuple[FarmNode, httpx.AsyncClient]) -> None:
    """With Accept-Encoding gzip the stream is one gzip member flushed per event: what has
    arrived decompresses to every event so far, before the stream ends."""
    _node, client = live
    for n, (encoding, zipped) in enumerate((("gzip, deflate", True), ("identity", False),
                                            ("gzip;q=0, identity", False))):
        async with client.stream("GET", "/api/v1/events",
                                 headers={"Accept-Encoding": encoding}) as response:
            assert response.headers.get("content-encoding") == ("gzip" if zipped else None)
            unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
            text = ""
            raw = response.aiter_raw()
            spool_id = f"gz-{n}"
            async with asyncio.timeout(10):  # an unflushed stream would hold the events back
                while "event: hello" not in text:
                    chunk = await anext(raw)
                    text += (unpacker.decompress(chunk) if zipped else chunk).decode()
                await spool(client, spool_id)
                while f'"id":"{spool_id}"' not in text:
                    chunk = await anext(raw)
                    text += (unpacker.decompress(chunk) if zipped else chunk).decode()
            assert "event: change" in text
