"""Printer clients at the HTTP boundary (a stand-in server on loopback): requests sent,
answers read, and every way a connection fails mapped to the right PrinterError."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TypeVar

import httpx
import pytest

from mes.printers.base import (
    PrinterBusy,
    PrinterError,
    PrinterNoAnswer,
    PrinterNotSent,
    PrinterRefused,
)
from mes.printers.mock import MockPrinter
from mes.printers.octoprint import OctoPrintClient
from mes.printers.prusalink import PrusaLinkClient
from tests.printer_stand_in import (
    CLOSE,
    GARBAGE,
    HANG,
    RESET,
    Routes,
    StandIn,
    quick_session,
    refused_url,
    stand_in,
    unreachable,
)

Recorder = StandIn
# What the running test started: stand-ins and clients, all stopped when it ends.
_started: list[contextlib.AsyncExitStack] = []


@pytest.fixture(autouse=True)
async def _stop_what_the_test_started() -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        _started.append(stack)
        try:
            yield
        finally:
            _started.pop()


async def _serve(routes: Routes) -> StandIn:
    return await _started[-1].enter_async_context(stand_in(routes))


Client = TypeVar("Client", OctoPrintClient, PrusaLinkClient)


def _closing(client: Client) -> Client:
    _started[-1].push_async_callback(client.aclose)
    return client


OCTO_PRINTING = {
    "state": {"text": "Printing", "flags": {"operational": True, "printing": True,
                                            "paused": False, "error": False, "ready": False}},
    "temperature": {"tool0": {"actual": 214.8, "target": 215.0},
                    "bed": {"actual": 59.9, "target": 60.0}},
}
OCTO_JOB = {"job": {"file": {"name": "benchy.gcode"}},
            "progress": {"completion": 42.5, "printTime": 120, "printTimeLeft": 163},
            "state": "Printing"}


async def octo(routes: Routes) -> tuple[OctoPrintClient, Recorder]:
    recorder = await _serve(routes)
    return _closing(OctoPrintClient(recorder.url, "KEY")), recorder


async def test_octoprint_status_reads_printer_and_job() -> None:
    client, rec = await octo({("GET", "/api/printer"): httpx.Response(200, json=OCTO_PRINTING),
                        ("GET", "/api/job"): httpx.Response(200, json=OCTO_JOB)})
    status = await client.status()
    assert status.state == "printing"
    assert (status.nozzle_actual, status.nozzle_target) == (214.8, 215.0)
    assert (status.bed_actual, status.bed_target) == (59.9, 60.0)  # not the nozzle's values
    assert (status.file_name, status.progress, status.time_left) == ("benchy.gcode", 42.5, 163)
    assert rec.requests[0].headers["X-Api-Key"] == "KEY"


@pytest.mark.parametrize(
    ("flags", "completion", "expected"),
    [
        ({"operational": True, "ready": True}, None, "idle"),
        ({"operational": True, "ready": True}, 100.0, "finished"),
        ({"operational": True, "paused": True}, 50.0, "paused"),
        ({"operational": True, "pausing": True}, 50.0, "paused"),
        ({"operational": True, "cancelling": True}, 50.0, "printing"),
        ({"error": True, "closedOrError": True}, None, "error"),
    ],
)
async def test_octoprint_state_mapping(flags: dict[str, bool], completion: float | None,
                                       expected: str) -> None:
    printer = {"state": {"text": "Some text", "flags": flags}, "temperature": {}}
    job = {"job": {"file": {"name": None}}, "progress": {"completion": completion}}
    client, _ = await octo({("GET", "/api/printer"): httpx.Response(200, json=printer),
                      ("GET", "/api/job"): httpx.Response(200, json=job)})
    status = await client.status()
    assert status.state == expected
    # the error is ours: OctoPrint's own state text is never echoed
    assert (status.error == "OctoPrint reports a printer error") == (expected == "error")


async def test_octoprint_disconnected_is_offline_and_connects() -> None:
    client, rec = await octo({
        ("GET", "/api/printer"): httpx.Response(409, text="Printer is not operational"),
        ("POST", "/api/connection"): httpx.Response(204)})
    status = await client.status()
    assert status.state == "offline"
    assert json.loads(rec.sent("POST", "/api/connection").content) == {"command": "connect"}


async def test_octoprint_upload_does_not_print_and_start_is_one_short_command() -> None:
    client, rec = await octo({("POST", "/api/files/local"): httpx.Response(
        201, json={"done": True, "effectivePrint": False, "effectiveSelect": False}),
        ("POST", "/api/files/local/job 1.gcode"): httpx.Response(204)})
    await client.upload("job 1.gcode", b"G28\nG1 X10\n")
    body = rec.sent("POST", "/api/files/local").content
    assert b'name="file"; filename="job 1.gcode"' in body
    assert b"G28\nG1 X10\n" in body
    assert b'name="print"\r\n\r\nfalse' in body and b'name="select"\r\n\r\nfalse' in body
    await client.start("job 1.gcode")
    sent = rec.sent("POST", "/api/files/local/job 1.gcode")
    assert sent.url.raw_path == b"/api/files/local/job%201.gcode"
    assert json.loads(sent.content) == {"command": "select", "print": True}

    busy, _ = await octo({("POST", "/api/files/local/a.gcode"): httpx.Response(
        409, json={"error": "Printer is already printing"})})
    with pytest.raises(PrinterBusy):
        await busy.start("a.gcode")
    missing, _ = await octo({})
    with pytest.raises(PrinterRefused):
        await missing.start("a.gcode")


def _clients(url: str, **timeouts: float) -> list[OctoPrintClient | PrusaLinkClient]:
    """An OctoPrint and a PrusaLink client of `url`, with short timeouts."""
    session = quick_session(**timeouts)
    _started[-1].push_async_callback(session.close)
    return [OctoPrintClient(url, "KEY", session=session),
            PrusaLinkClient(url, api_key="KEY", session=session)]


START_PATHS = ("/api/files/local/a.gcode", "/api/v1/files/local/a.gcode")


@pytest.mark.parametrize(
    ("misbehaviour", "expected", "words"),
    [(HANG, PrinterNoAnswer, "timed out waiting for the answer"),
     (CLOSE, PrinterNoAnswer, "the connection broke (ServerDisconnectedError)"),
     (RESET, PrinterNoAnswer, "the connection broke"),
     (GARBAGE, PrinterNoAnswer, "unexpected answer from the printer (not valid HTTP)")],
)
async def test_a_start_that_may_have_arrived_is_no_answer(
        misbehaviour: str, expected: type[Exception], words: str) -> None:
    server = await _serve({("POST", path): misbehaviour for path in START_PATHS})
    for client in _clients(server.url, sock_read=0.3):
        with pytest.raises(PrinterError) as raised:
            await client.start("a.gcode")
        assert type(raised.value) is expected, (type(client), raised.value)
        assert words in str(raised.value)
        assert "SECRET" not in str(raised.value)
    assert [r.url.path for r in server.requests] == list(START_PATHS)  # each sent once


async def test_only_a_connection_never_made_counts_as_not_sent() -> None:
    for client in _clients(refused_url()):
        with pytest.raises(PrinterNotSent, match="connection refused"):
            await client.start("a.gcode")
    async with unreachable() as url:
        for client in _clients(url, connect=0.3, sock_connect=0.3):
            with pytest.raises(PrinterNotSent, match="could not connect in time"):
                await client.start("a.gcode")
    for client in _clients("http://printer.invalid"):
        with pytest.raises(PrinterNotSent, match="host name does not resolve"):
            await client.start("a.gcode")


async def test_a_5xx_answer_to_a_start_is_not_a_refusal() -> None:
    client, _ = await octo({("POST", "/api/files/local/a.gcode"): httpx.Response(500)})
    with pytest.raises(PrinterError) as raised:
        await client.start("a.gcode")
    assert not isinstance(raised.value, PrinterRefused | PrinterNotSent)


@pytest.mark.parametrize(
    ("call", "body"),
    [
        ("cancel", {"command": "cancel"}),
        ("pause", {"command": "pause", "action": "pause"}),
        ("resume", {"command": "pause", "action": "resume"}),
    ],
)
async def test_octoprint_job_commands(call: str, body: dict[str, str]) -> None:
    client, rec = await octo({("POST", "/api/job"): httpx.Response(204)})
    await getattr(client, call)()
    assert json.loads(rec.sent("POST", "/api/job").content) == body

    refused, _ = await octo({("POST", "/api/job"): httpx.Response(409, text="nothing to cancel")})
    with pytest.raises(PrinterBusy):
        await getattr(refused, call)()


async def test_octoprint_delete_file() -> None:
    client, rec = await octo({("DELETE", "/api/files/local/a.gcode"): httpx.Response(204)})
    await client.delete_file("a.gcode")
    assert rec.requests[0].method == "DELETE"
    missing, _ = await octo({("DELETE", "/api/files/local/a.gcode"): httpx.Response(404)})
    await missing.delete_file("a.gcode")
    printing, _ = await octo({("DELETE", "/api/files/local/a.gcode"): httpx.Response(409)})
    with pytest.raises(PrinterBusy):
        await printing.delete_file("a.gcode")


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(403, text="Forbidden"), httpx.Response(500, text="boom"),
     httpx.Response(200, text="<html>not json</html>"), httpx.Response(200, json=[1, 2])],
)
async def test_octoprint_errors_and_garbage_raise_printer_error(answer: httpx.Response) -> None:
    client, _ = await octo({("GET", "/api/printer"): answer,
                      ("GET", "/api/job"): httpx.Response(200, json=OCTO_JOB)})
    with pytest.raises(PrinterError):
        await client.status()


async def test_timeouts_and_refused_connections_raise_printer_error() -> None:
    server = await _serve({("GET", "/api/printer"): HANG, ("GET", "/api/v1/status"): HANG})
    for client in _clients(server.url, sock_read=0.3) + _clients(refused_url()):
        with pytest.raises(PrinterError):
            await client.status()


PRUSA_STATUS = {"printer": {"state": "PRINTING", "temp_nozzle": 214.0, "target_nozzle": 215.0,
                            "temp_bed": 59.0, "target_bed": 60.0},
                "job": {"id": 7, "progress": 31.0, "time_remaining": 600, "time_printing": 300}}
PRUSA_JOB = {"id": 7, "state": "PRINTING", "progress": 31.0, "time_remaining": 600,
             "time_printing": 300, "file": {"name": "cube.gcode", "display_name": "cube.gcode",
                                            "path": "/local"}}


async def prusa(routes: Routes, **kwargs: str) -> tuple[PrusaLinkClient, Recorder]:
    recorder = await _serve(routes)
    options = kwargs or {"api_key": "KEY"}
    return _closing(PrusaLinkClient(recorder.url, **options)), recorder  # type: ignore[arg-type]


async def test_prusalink_status_and_job() -> None:
    client, rec = await prusa({("GET", "/api/v1/status"): httpx.Response(200, json=PRUSA_STATUS),
                         ("GET", "/api/v1/job"): httpx.Response(200, json=PRUSA_JOB)})
    status = await client.status()
    assert status.state == "printing"
    assert (status.nozzle_actual, status.bed_target) == (214.0, 60.0)
    assert (status.file_name, status.progress, status.time_left) == ("cube.gcode", 31.0, 600)
    assert rec.requests[0].headers["X-Api-Key"] == "KEY"


@pytest.mark.parametrize(
    ("state", "expected"),
    [("IDLE", "idle"), ("READY", "idle"), ("FINISHED", "finished"), ("PAUSED", "paused"),
     ("STOPPED", "idle"), ("ERROR", "error"), ("ATTENTION", "paused"), ("BUSY", "idle")],
)
async def test_prusalink_state_names_and_204_without_job(state: str, expected: str) -> None:
    client, _ = await prusa({("GET", "/api/v1/status"): httpx.Response(
        200, json={"printer": {"state": state}}),
        ("GET", "/api/v1/job"): httpx.Response(204)})
    status = await client.status()
    assert status.state == expected
    assert status.file_name is None


async def test_prusalink_raw_upload_without_printing_then_start() -> None:
    client, rec = await prusa({("PUT", "/api/v1/files/local/job 1.gcode"): httpx.Response(201),
                         ("POST", "/api/v1/files/local/job 1.gcode"): httpx.Response(204)})
    await client.upload("job 1.gcode", b"G28\n")
    sent = rec.requests[0]
    assert sent.url.raw_path == b"/api/v1/files/local/job%201.gcode"
    assert sent.content == b"G28\n"  # raw, not multipart
    assert sent.headers["Content-Type"] == "application/octet-stream"
    assert "Print-After-Upload" not in sent.headers
    assert sent.headers["Overwrite"] == "?1"
    await client.start("job 1.gcode")
    start = rec.requests[1]
    assert (start.method, start.url.raw_path) == ("POST", b"/api/v1/files/local/job%201.gcode")
    assert start.content == b""
    busy, _ = await prusa({("POST", "/api/v1/files/local/a.gcode"): httpx.Response(
        409, json={"code": "CONFLICT", "title": "Busy", "text": "printer is busy", "url": ""})})
    with pytest.raises(PrinterBusy, match=r"HTTP 409 from the printer \(busy\)"):
        await busy.start("a.gcode")


@pytest.mark.parametrize(
    ("call", "method", "path"),
    [("cancel", "DELETE", "/api/v1/job/7"), ("pause", "PUT", "/api/v1/job/7/pause"),
     ("resume", "PUT", "/api/v1/job/7/resume")],
)
async def test_prusalink_job_commands_use_the_job_id(call: str, method: str, path: str) -> None:
    client, rec = await prusa({("GET", "/api/v1/job"): httpx.Response(200, json=PRUSA_JOB),
                         (method, path): httpx.Response(204)})
    await getattr(client, call)()
    assert rec.requests[-1].method == method and rec.requests[-1].url.path == path
    for refusal, error in ((404, PrinterError), (409, PrinterBusy)):
        refused, _ = await prusa({("GET", "/api/v1/job"): httpx.Response(200, json=PRUSA_JOB),
                            (method, path): httpx.Response(refusal)})
        with pytest.raises(error):
            await getattr(refused, call)()
    idle, _ = await prusa({("GET", "/api/v1/job"): httpx.Response(204)})
    with pytest.raises(PrinterError, match="no current job"):
        await getattr(idle, call)()


async def test_prusalink_auth_errors() -> None:
    client, _ = await prusa({("GET", "/api/v1/status"): httpx.Response(403, json={
        "code": "FORBIDDEN", "title": "Forbidden", "text": "bad key", "url": ""})})
    with pytest.raises(PrinterError, match="403"):
        await client.status()


async def test_prusalink_digest_auth_answers_the_challenge() -> None:
    def status(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate":
                                                'Digest realm="Administrator", nonce="abc", '
                                                'qop="auth"'})
        assert request.headers["authorization"].startswith("Digest ")
        assert 'username="maker"' in request.headers["authorization"]
        return httpx.Response(200, json={"printer": {"state": "IDLE"}})

    client, rec = await prusa({("GET", "/api/v1/status"): status,
                         ("GET", "/api/v1/job"): httpx.Response(204)},
                        user="maker", password="secret")
    assert (await client.status()).state == "idle"
    assert "X-Api-Key" not in rec.requests[0].headers


async def test_prusalink_delete_file() -> None:
    client, rec = await prusa({("DELETE", "/api/v1/files/local/a.gcode"): httpx.Response(204)})
    await client.delete_file("a.gcode")
    assert rec.requests[0].url.path == "/api/v1/files/local/a.gcode"
    printing, _ = await prusa({("DELETE", "/api/v1/files/local/a.gcode"): httpx.Response(409)})
    with pytest.raises(PrinterBusy):
        await printing.delete_file("a.gcode")


async def test_mock_printer_heats_prints_finishes_and_refuses_a_second_start() -> None:
    now = [0.0]
    mock = MockPrinter(interval=1.0, job_ticks=10, bed_target=60, nozzle_target=210,
                       clock=lambda: now[0])
    assert (await mock.status()).state == "idle"
    with pytest.raises(PrinterRefused):
        await mock.start("a.gcode")  # not uploaded
    await mock.upload("a.gcode", b"G28\n")
    await mock.upload("b.gcode", b"G28\n")
    await mock.start("a.gcode")
    with pytest.raises(PrinterBusy):
        await mock.start("b.gcode")
    now[0] = 1.5
    heating = await mock.status()
    assert heating.state == "printing" and 22 < heating.nozzle_actual < 210  # type: ignore[operator]
    now[0] = 8.0
    assert (await mock.status()).progress == 50.0
    await mock.pause()
    now[0] = 100.0
    paused = await mock.status()
    assert paused.state == "paused" and paused.progress == 50.0
    await mock.resume()
    now[0] = 105.1
    done = await mock.status()
    assert done.state == "finished" and done.file_name == "a.gcode"
    await mock.start("b.gcode")
    await mock.cancel()
    assert (await mock.status()).state == "idle"
    assert mock.starts == {"a.gcode": 1, "b.gcode": 1}


async def test_octoprint_idle_poll_without_expected_job_skips_the_job_request() -> None:
    idle = {"state": {"text": "Operational", "flags": {"operational": True, "ready": True}},
            "temperature": {"tool0": {"actual": 25.0, "target": 0.0}}}
    client, rec = await octo({("GET", "/api/printer"): httpx.Response(200, json=idle),
                        ("GET", "/api/job"): httpx.Response(200, json=OCTO_JOB)})
    status = await client.status(expect_job=False)
    assert status.state == "idle" and status.nozzle_actual == 25.0
    assert [r.url.path for r in rec.requests] == ["/api/printer"]
    printing, rec2 = await octo({("GET", "/api/printer"): httpx.Response(200, json=OCTO_PRINTING),
                           ("GET", "/api/job"): httpx.Response(200, json=OCTO_JOB)})
    assert (await printing.status(expect_job=False)).file_name == "benchy.gcode"
    assert [r.url.path for r in rec2.requests] == ["/api/printer", "/api/job"]


async def test_prusalink_reads_a_jobs_file_once_while_it_prints() -> None:
    jobs = [PRUSA_JOB, {**PRUSA_JOB, "id": 8, "file": {"name": "CUBE2~1.GCO",
                                                         "display_name": "cube2.gcode"}}]
    status = {**PRUSA_STATUS}
    client, rec = await prusa({("GET", "/api/v1/status"): lambda r: httpx.Response(
        200, json=status), ("GET", "/api/v1/job"): lambda r: httpx.Response(200, json=jobs[0])})
    for _ in range(3):
        assert (await client.status()).file_name == "cube.gcode"
    assert [r.url.path for r in rec.requests].count("/api/v1/job") == 1
    status["job"] = {**PRUSA_STATUS["job"], "id": 8, "progress": 2.0}  # a new job
    jobs[0] = jobs[1]
    second = await client.status()
    assert (second.file_name, second.progress) == ("cube2.gcode", 2.0)
    assert [r.url.path for r in rec.requests].count("/api/v1/job") == 2
