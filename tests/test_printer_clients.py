"""Printer clients at the HTTP boundary (httpx.MockTransport): requests sent, answers read."""

from __future__ import annotations

import json
from collections.abc import Callable

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

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport that records requests and answers from a route table."""

    def __init__(self, routes: dict[tuple[str, str], httpx.Response | Handler]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"error": "no route"})
        return answer(request) if callable(answer) else answer

    def sent(self, method: str, path: str) -> httpx.Request:
        return next(r for r in self.requests if r.method == method and r.url.path == path)


OCTO_PRINTING = {
    "state": {"text": "Printing", "flags": {"operational": True, "printing": True,
                                            "paused": False, "error": False, "ready": False}},
    "temperature": {"tool0": {"actual": 214.8, "target": 215.0},
                    "bed": {"actual": 59.9, "target": 60.0}},
}
OCTO_JOB = {"job": {"file": {"name": "benchy.gcode"}},
            "progress": {"completion": 42.5, "printTime": 120, "printTimeLeft": 163},
            "state": "Printing"}


def octo(routes: dict[tuple[str, str], httpx.Response | Handler]) -> tuple[OctoPrintClient,
                                                                           Recorder]:
    recorder = Recorder(routes)
    return OctoPrintClient("http://octo.test", "KEY", transport=recorder.transport), recorder


async def test_octoprint_status_reads_printer_and_job() -> None:
    client, rec = octo({("GET", "/api/printer"): httpx.Response(200, json=OCTO_PRINTING),
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
    client, _ = octo({("GET", "/api/printer"): httpx.Response(200, json=printer),
                      ("GET", "/api/job"): httpx.Response(200, json=job)})
    status = await client.status()
    assert status.state == expected
    # the error is ours: OctoPrint's own state text is never echoed
    assert (status.error == "OctoPrint reports a printer error") == (expected == "error")


async def test_octoprint_disconnected_is_offline_and_connects() -> None:
    client, rec = octo({
        ("GET", "/api/printer"): httpx.Response(409, text="Printer is not operational"),
        ("POST", "/api/connection"): httpx.Response(204)})
    status = await client.status()
    assert status.state == "offline"
    assert json.loads(rec.sent("POST", "/api/connection").content) == {"command": "connect"}


async def test_octoprint_upload_does_not_print_and_start_is_one_short_command() -> None:
    client, rec = octo({("POST", "/api/files/local"): httpx.Response(
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

    busy, _ = octo({("POST", "/api/files/local/a.gcode"): httpx.Response(
        409, json={"error": "Printer is already printing"})})
    with pytest.raises(PrinterBusy):
        await busy.start("a.gcode")
    missing, _ = octo({})
    with pytest.raises(PrinterRefused):
        await missing.start("a.gcode")


def _raising(exc: Exception) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return handle


@pytest.mark.parametrize(
    ("exc", "expected"),
    [(httpx.ConnectError("refused"), PrinterNotSent),
     (httpx.ConnectTimeout("connect"), PrinterNotSent),
     (httpx.ReadTimeout("read"), PrinterNoAnswer),
     (httpx.WriteTimeout("write"), PrinterNoAnswer),
     (httpx.RemoteProtocolError("Server disconnected without sending a response."),
      PrinterNoAnswer),
     (httpx.ReadError("reset"), PrinterNoAnswer)],
)
async def test_only_a_connection_never_made_counts_as_not_sent(
        exc: Exception, expected: type[Exception]) -> None:
    for client, path in ((octo({("POST", "/api/files/local/a.gcode"): _raising(exc)})[0],
                          "octo"),
                         (prusa({("POST", "/api/v1/files/local/a.gcode"): _raising(exc)})[0],
                          "prusa")):
        with pytest.raises(PrinterError) as raised:
            await client.start("a.gcode")
        assert type(raised.value) is expected, path


async def test_a_5xx_answer_to_a_start_is_not_a_refusal() -> None:
    client, _ = octo({("POST", "/api/files/local/a.gcode"): httpx.Response(500)})
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
    client, rec = octo({("POST", "/api/job"): httpx.Response(204)})
    await getattr(client, call)()
    assert json.loads(rec.sent("POST", "/api/job").content) == body

    refused, _ = octo({("POST", "/api/job"): httpx.Response(409, text="nothing to cancel")})
    with pytest.raises(PrinterBusy):
        await getattr(refused, call)()


async def test_octoprint_delete_file() -> None:
    client, rec = octo({("DELETE", "/api/files/local/a.gcode"): httpx.Response(204)})
    await client.delete_file("a.gcode")
    assert rec.requests[0].method == "DELETE"
    missing, _ = octo({("DELETE", "/api/files/local/a.gcode"): httpx.Response(404)})
    await missing.delete_file("a.gcode")
    printing, _ = octo({("DELETE", "/api/files/local/a.gcode"): httpx.Response(409)})
    with pytest.raises(PrinterBusy):
        await printing.delete_file("a.gcode")


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(403, text="Forbidden"), httpx.Response(500, text="boom"),
     httpx.Response(200, text="<html>not json</html>"), httpx.Response(200, json=[1, 2])],
)
async def test_octoprint_errors_and_garbage_raise_printer_error(answer: httpx.Response) -> None:
    client, _ = octo({("GET", "/api/printer"): answer,
                      ("GET", "/api/job"): httpx.Response(200, json=OCTO_JOB)})
    with pytest.raises(PrinterError):
        await client.status()


async def test_timeouts_and_refused_connections_raise_printer_error() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for fail in (timeout, refused):
        client, _ = octo({("GET", "/api/printer"): fail})
        with pytest.raises(PrinterError):
            await client.status()
        link = PrusaLinkClient("http://p.test", api_key="K",
                               transport=httpx.MockTransport(fail))
        with pytest.raises(PrinterError):
            await link.status()


PRUSA_STATUS = {"printer": {"state": "PRINTING", "temp_nozzle": 214.0, "target_nozzle": 215.0,
                            "temp_bed": 59.0, "target_bed": 60.0},
                "job": {"id": 7, "progress": 31.0, "time_remaining": 600, "time_printing": 300}}
PRUSA_JOB = {"id": 7, "state": "PRINTING", "progress": 31.0, "time_remaining": 600,
             "time_printing": 300, "file": {"name": "cube.gcode", "display_name": "cube.gcode",
                                            "path": "/local"}}


def prusa(routes: dict[tuple[str, str], httpx.Response | Handler],
          **kwargs: str) -> tuple[PrusaLinkClient, Recorder]:
    recorder = Recorder(routes)
    options = kwargs or {"api_key": "KEY"}
    return PrusaLinkClient("http://prusa.test", transport=recorder.transport,
                           **options), recorder  # type: ignore[arg-type]


async def test_prusalink_status_and_job() -> None:
    client, rec = prusa({("GET", "/api/v1/status"): httpx.Response(200, json=PRUSA_STATUS),
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
    client, _ = prusa({("GET", "/api/v1/status"): httpx.Response(
        200, json={"printer": {"state": state}}),
        ("GET", "/api/v1/job"): httpx.Response(204)})
    status = await client.status()
    assert status.state == expected
    assert status.file_name is None


async def test_prusalink_raw_upload_without_printing_then_start() -> None:
    client, rec = prusa({("PUT", "/api/v1/files/local/job 1.gcode"): httpx.Response(201),
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
    busy, _ = prusa({("POST", "/api/v1/files/local/a.gcode"): httpx.Response(
        409, json={"code": "CONFLICT", "title": "Busy", "text": "printer is busy", "url": ""})})
    with pytest.raises(PrinterBusy, match=r"HTTP 409 from the printer \(busy\)"):
        await busy.start("a.gcode")


@pytest.mark.parametrize(
    ("call", "method", "path"),
    [("cancel", "DELETE", "/api/v1/job/7"), ("pause", "PUT", "/api/v1/job/7/pause"),
     ("resume", "PUT", "/api/v1/job/7/resume")],
)
async def test_prusalink_job_commands_use_the_job_id(call: str, method: str, path: str) -> None:
    client, rec = prusa({("GET", "/api/v1/job"): httpx.Response(200, json=PRUSA_JOB),
                         (method, path): httpx.Response(204)})
    await getattr(client, call)()
    assert rec.requests[-1].method == method and rec.requests[-1].url.path == path
    for refusal, error in ((404, PrinterError), (409, PrinterBusy)):
        refused, _ = prusa({("GET", "/api/v1/job"): httpx.Response(200, json=PRUSA_JOB),
                            (method, path): httpx.Response(refusal)})
        with pytest.raises(error):
            await getattr(refused, call)()
    idle, _ = prusa({("GET", "/api/v1/job"): httpx.Response(204)})
    with pytest.raises(PrinterError, match="no current job"):
        await getattr(idle, call)()


async def test_prusalink_auth_errors() -> None:
    client, _ = prusa({("GET", "/api/v1/status"): httpx.Response(403, json={
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

    client, rec = prusa({("GET", "/api/v1/status"): status,
                         ("GET", "/api/v1/job"): httpx.Response(204)},
                        user="maker", password="secret")
    assert (await client.status()).state == "idle"
    assert "X-Api-Key" not in rec.requests[0].headers


async def test_prusalink_delete_file() -> None:
    client, rec = prusa({("DELETE", "/api/v1/files/local/a.gcode"): httpx.Response(204)})
    await client.delete_file("a.gcode")
    assert rec.requests[0].url.path == "/api/v1/files/local/a.gcode"
    printing, _ = prusa({("DELETE", "/api/v1/files/local/a.gcode"): httpx.Response(409)})
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
    client, rec = octo({("GET", "/api/printer"): httpx.Response(200, json=idle),
                        ("GET", "/api/job"): httpx.Response(200, json=OCTO_JOB)})
    status = await client.status(expect_job=False)
    assert status.state == "idle" and status.nozzle_actual == 25.0
    assert [r.url.path for r in rec.requests] == ["/api/printer"]
    printing, rec2 = octo({("GET", "/api/printer"): httpx.Response(200, json=OCTO_PRINTING),
                           ("GET", "/api/job"): httpx.Response(200, json=OCTO_JOB)})
    assert (await printing.status(expect_job=False)).file_name == "benchy.gcode"
    assert [r.url.path for r in rec2.requests] == ["/api/printer", "/api/job"]
