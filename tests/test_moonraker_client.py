"""The Moonraker client at the HTTP boundary (a stand-in server on loopback): one query per
poll, Klipper's states normalised, its refusals and its words handled safely."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mes.printers.base import PrinterBusy, PrinterError, PrinterNotSent, PrinterRefused
from mes.printers.moonraker import MESSAGE_CHARS, QUERY, MoonrakerClient
from tests.printer_stand_in import GARBAGE, Routes, StandIn, refused_url, stand_in

QUERY_PATH = QUERY.split("?", 1)[0]


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as started:
        yield started


async def moonraker(stack: contextlib.AsyncExitStack, routes: Routes,
                    api_key: str | None = "KEY") -> tuple[MoonrakerClient, StandIn]:
    recorder = await stack.enter_async_context(stand_in(routes))
    client = MoonrakerClient(recorder.url, api_key=api_key)
    stack.push_async_callback(client.aclose)
    return client, recorder


def objects(state: str = "printing", klippy: str = "ready", message: str = "",
            progress: float = 0.25, duration: float = 300.0, filename: str = "cube.gcode",
            state_message: str = "Printer is ready") -> dict[str, Any]:
    """An objects query answer as Moonraker 0.11.0 gives it."""
    return {"result": {"eventtime": 1234.5, "status": {
        "webhooks": {"state": klippy, "state_message": state_message},
        "print_stats": {"filename": filename, "total_duration": duration + 10,
                        "print_duration": duration, "filament_used": 120.0, "state": state,
                        "message": message, "info": {"total_layer": None,
                                                     "current_layer": None}},
        "virtual_sdcard": {"file_path": f"/gcodes/{filename}", "progress": progress,
                           "is_active": state == "printing", "file_position": 100},
        "extruder": {"temperature": 214.6, "target": 215.0, "power": 0.5},
        "heater_bed": {"temperature": 59.8, "target": 60.0, "power": 0.3},
        "display_status": {"progress": progress, "message": None},
    }}}


def query(answer: dict[str, Any] | httpx.Response) -> Routes:
    reply = answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)
    return {("GET", QUERY_PATH): reply}


async def test_one_query_gives_state_temperatures_file_progress_and_time_left(
        stack: contextlib.AsyncExitStack) -> None:
    client, rec = await moonraker(stack, query(objects()))
    status = await client.status()
    assert status.state == "printing"
    assert (status.nozzle_actual, status.nozzle_target) == (214.6, 215.0)
    assert (status.bed_actual, status.bed_target) == (59.8, 60.0)
    assert (status.file_name, status.progress) == ("cube.gcode", 25.0)
    assert status.time_printed == 300.0
    assert status.time_left == pytest.approx(900.0)  # 300 s for a quarter: 900 s to go
    assert status.error is None
    assert len(rec.requests) == 1
    sent = rec.requests[0]
    assert sent.headers["X-Api-Key"] == "KEY"
    assert set(sent.url.params) == {"webhooks", "print_stats", "virtual_sdcard", "extruder",
                                    "heater_bed", "display_status"}


@pytest.mark.parametrize(("klipper", "ours"), [
    ("standby", "idle"), ("printing", "printing"), ("paused", "paused"),
    ("complete", "finished"), ("cancelled", "idle"), ("error", "error"),
    ("something-new", "error")])
async def test_print_states_are_normalised(stack: contextlib.AsyncExitStack, klipper: str,
                                           ours: str) -> None:
    client, _ = await moonraker(stack, query(objects(state=klipper, progress=1.0)))
    status = await client.status()
    assert status.state == ours
    if ours == "finished":
        assert (status.progress, status.time_left) == (100.0, 0.0)
    if ours == "idle":
        assert status.time_left is None
    assert (status.error is not None) == (ours == "error")


async def test_a_print_error_carries_klippers_words_made_safe(
        stack: contextlib.AsyncExitStack) -> None:
    hostile = "Move out of range: 300.000 \x1b[31m<script>\n" + "x" * 500
    client, _ = await moonraker(stack, query(objects(state="error", message=hostile)))
    status = await client.status()
    assert status.state == "error"
    assert status.error is not None
    assert status.error.startswith("Klipper reports a print error (Move out of range: 300.000")
    assert "\x1b" not in status.error and "\n" not in status.error
    assert len(status.error) < MESSAGE_CHARS + 40


@pytest.mark.parametrize(("klippy", "state", "words"), [
    ("startup", "offline", "Klipper is starting"),
    ("shutdown", "error", "Klipper is in state 'shutdown'"),
    ("error", "error", "Klipper is in state 'error'")])
async def test_klippy_not_ready_is_offline_or_error_with_its_message(
        stack: contextlib.AsyncExitStack, klippy: str, state: str, words: str) -> None:
    client, _ = await moonraker(stack, query(objects(
        klippy=klippy, state_message="Lost communication with MCU 'mcu'")))
    status = await client.status()
    assert status.state == state
    assert status.error == f"{words} (Lost communication with MCU 'mcu')"
    assert status.file_name is None and status.nozzle_actual is None


async def test_moonraker_without_klippy_is_offline(stack: contextlib.AsyncExitStack) -> None:
    client, _ = await moonraker(stack, query(httpx.Response(503, json={"error": {
        "code": 503, "message": "Klippy Host not connected"}})))
    status = await client.status()
    assert (status.state, status.error) == ("offline", "Klipper is not connected to Moonraker")


@pytest.mark.parametrize("answer", [
    httpx.Response(200, content=b"not json"), httpx.Response(200, json=[1, 2]),
    httpx.Response(200, json={"result": {}}), httpx.Response(401, json={"error": {}}),
    httpx.Response(500, json={"error": {"code": 500, "message": "boom"}})])
async def test_nonsense_and_refusals_raise_printer_error(
        stack: contextlib.AsyncExitStack, answer: httpx.Response) -> None:
    client, _ = await moonraker(stack, query(answer))
    with pytest.raises(PrinterError):
        await client.status()


async def test_garbage_and_refused_connections(stack: contextlib.AsyncExitStack) -> None:
    client, _ = await moonraker(stack, {("GET", QUERY_PATH): GARBAGE})
    with pytest.raises(PrinterError):
        await client.status()
    nobody = MoonrakerClient(refused_url())
    stack.push_async_callback(nobody.aclose)
    with pytest.raises(PrinterNotSent):
        await nobody.start("a.gcode")


async def test_upload_stores_without_printing_then_start_is_one_short_request(
        stack: contextlib.AsyncExitStack) -> None:
    client, rec = await moonraker(stack, {
        ("POST", "/server/files/upload"): httpx.Response(201, json={
            "item": {"path": "job 1.gcode", "root": "gcodes"}, "print_started": False,
            "print_queued": False, "action": "create_file"}),
        ("POST", "/printer/print/start"): httpx.Response(200, json={"result": "ok"})})
    await client.upload("job 1.gcode", b"G28\nG1 X10\n")
    sent = rec.requests[0]
    body = sent.content
    assert b'name="root"\r\n\r\ngcodes' in body
    assert b'name="print"\r\n\r\nfalse' in body
    assert b'filename="job 1.gcode"' in body and b"G28\nG1 X10\n" in body
    await client.start("job 1.gcode")
    start = rec.requests[1]
    assert start.url.raw_path == b"/printer/print/start?filename=job%201.gcode"
    assert start.content == b""


@pytest.mark.parametrize(("message", "error"), [
    ("SD busy", PrinterBusy), ("Print already in progress", PrinterBusy),
    ('Unable to open file "gone.gcode"', PrinterRefused)])
async def test_klipper_refusing_a_start(stack: contextlib.AsyncExitStack, message: str,
                                        error: type[PrinterError]) -> None:
    client, _ = await moonraker(stack, {("POST", "/printer/print/start"): httpx.Response(
        400, json={"error": {"code": 400, "message": message}})})
    with pytest.raises(error) as raised:
        await client.start("gone.gcode")
    if error is PrinterRefused:
        assert not isinstance(raised.value, PrinterBusy)
        assert "Klipper refused the command (Unable to open file" in str(raised.value)


@pytest.mark.parametrize("call", ["pause", "resume", "cancel"])
async def test_print_commands(stack: contextlib.AsyncExitStack, call: str) -> None:
    client, rec = await moonraker(stack, {("POST", f"/printer/print/{call}"): httpx.Response(
        200, json={"result": "ok"})}, api_key=None)
    await getattr(client, call)()
    assert rec.requests[0].url.path == f"/printer/print/{call}"
    assert "X-Api-Key" not in rec.requests[0].headers  # a trusting instance needs none


@pytest.mark.parametrize(("status", "outcome"), [
    (200, None), (404, None), (400, None), (403, PrinterBusy), (401, PrinterRefused)])
async def test_delete_file(stack: contextlib.AsyncExitStack, status: int,
                           outcome: type[PrinterError] | None) -> None:
    client, rec = await moonraker(stack, {("DELETE", "/server/files/gcodes/a b.gcode"):
                                          httpx.Response(status, json={"result": {}})})
    if outcome is None:
        await client.delete_file("a b.gcode")
    else:
        with pytest.raises(outcome):
            await client.delete_file("a b.gcode")
    assert rec.requests[0].url.raw_path == b"/server/files/gcodes/a%20b.gcode"
