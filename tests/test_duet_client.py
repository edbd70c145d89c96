"""The Duet (RepRapFirmware 3) client at the HTTP boundary, against a stand-in that answers
as the firmware's source says: sessions, the live model, a print followed to its end, and
what a completed print looks like against a cancelled one."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mes.printers.base import PrinterBusy, PrinterError, PrinterRefused
from mes.printers.duet import DuetClient
from tests.printer_stand_in import Routes, StandIn, stand_in


class FakeDuet:
    """The firmware's answers, changed by the test between polls."""

    def __init__(self, password: str = "secret") -> None:
        self.password = password
        self.sessions: set[str] = set()
        self.status = "idle"
        self.file: str | None = None
        self.position = 0
        self.seq = 0
        self.gcodes: list[str] = []
        self.delete_err = 0
        self.pause_takes_effect = False
        self.last_file: str | None = None  # M25 pauses at once (as pause.g would finish)

    def model(self, key: str, flags: str) -> Any:
        live = "f" in flags
        running = self.status in ("processing", "paused", "pausing", "resuming", "cancelling")
        whole: dict[str, Any] = {
            "state": {"status": self.status},
            "job": {"duration": 120.0 if running else None, "filePosition": self.position,
                    "timesLeft": {"file": 300.0 if running else None, "slicer": 400.0}},
            "heat": {"heaters": [{"current": 59.5, "active": 60.0},
                                 {"current": 214.0, "active": 215.0}]},
            "seqs": {"job": self.seq}}
        if not live:
            whole["job"]["file"] = {"fileName": f"0:/gcodes/{self.file}" if running else None,
                                    "size": 1000}
            whole["job"]["lastFileName"] = (None if running or not self.last_file
                                            else f"0:/gcodes/{self.last_file}")
            whole["heat"]["bedHeaters"] = [0, -1]
            whole["tools"] = [{"heaters": [1]}]
        if key:
            return whole.get(key)
        return whole

    def routes(self) -> Routes:
        def session(request: httpx.Request) -> str | None:
            return request.headers.get("x-session-key")

        def guarded(answer: Any) -> Any:
            def handle(request: httpx.Request) -> httpx.Response:
                if session(request) not in self.sessions:
                    return httpx.Response(401, text="Not authorized")
                return answer(request)
            return handle

        def connect(request: httpx.Request) -> httpx.Response:
            if request.url.params.get("password") != self.password:
                return httpx.Response(200, json={"err": 1})
            key = str(1000 + len(self.sessions))
            self.sessions.add(key)
            return httpx.Response(200, json={"err": 0, "sessionTimeout": 8000,
                                             "boardType": "MB6HC", "apiLevel": 2,
                                             "sessionKey": int(key)})

        def model(request: httpx.Request) -> httpx.Response:
            params = request.url.params
            return httpx.Response(200, json={"key": params["key"], "flags": params["flags"],
                                             "result": self.model(params["key"],
                                                                  params["flags"])})

        def gcode(request: httpx.Request) -> httpx.Response:
            self.gcodes.append(request.url.params["gcode"])
            if self.pause_takes_effect and self.gcodes[-1] == "M25":
                self.status = "paused"
            return httpx.Response(200, json={"buff": 255})

        return {("GET", "/rr_connect"): connect, ("GET", "/rr_model"): guarded(model),
                ("GET", "/rr_gcode"): guarded(gcode),
                ("POST", "/rr_upload"): guarded(lambda r: httpx.Response(200, json={"err": 0})),
                ("GET", "/rr_delete"): guarded(
                    lambda r: httpx.Response(200, json={"err": self.delete_err}))}


@pytest.fixture
async def duet() -> AsyncIterator[tuple[DuetClient, FakeDuet, StandIn]]:
    fake = FakeDuet()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(stand_in(fake.routes()))
        client = DuetClient(server.url, password="secret")
        stack.push_async_callback(client.aclose)
        yield client, fake, server


async def test_a_print_followed_to_completion(duet: tuple[DuetClient, FakeDuet, StandIn]
                                              ) -> None:
    client, fake, server = duet
    idle = await client.status()
    assert (idle.state, idle.file_name, idle.nozzle_actual, idle.bed_target) == \
        ("idle", None, 214.0, 60.0)
    fake.status, fake.file, fake.position, fake.seq = "processing", "mes-j1.gcode", 250, 1
    printing = await client.status()
    assert (printing.state, printing.file_name, printing.progress) == \
        ("printing", "mes-j1.gcode", 25.0)
    assert (printing.time_printed, printing.time_left) == (120.0, 300.0)
    fake.status, fake.position = "idle", 0
    for _ in range(3):  # stays finished until another print starts
        done = await client.status()
        assert (done.state, done.file_name, done.progress, done.time_left) == \
            ("finished", "mes-j1.gcode", 100.0, 0.0)
    fake.status, fake.file, fake.seq = "processing", "mes-j2.gcode", 2
    assert (await client.status()).file_name == "mes-j2.gcode"
    # The session: one connect, a key sent on every request after it.
    connects = [r for r in server.requests if r.url.path == "/rr_connect"]
    assert len(connects) == 1
    assert connects[0].url.params["sessionKey"] == "yes"
    assert all(r.headers.get("x-session-key") == "1000" for r in server.requests
               if r.url.path != "/rr_connect")


async def test_a_client_that_takes_over_an_idle_printer_takes_its_last_print_as_done(
        duet: tuple[DuetClient, FakeDuet, StandIn]) -> None:
    client, fake, _ = duet
    fake.last_file = "mes-j0.gcode"
    first = await client.status()
    assert (first.state, first.file_name) == ("finished", "mes-j0.gcode")
    fake.status, fake.file, fake.seq = "processing", "mes-j1.gcode", 1
    assert (await client.status()).state == "printing"
    fake.status = "paused"
    await client.status()
    fake.status, fake.last_file = "idle", "mes-j1.gcode"
    assert (await client.status()).state == "idle"  # watched: it ended from paused


async def test_a_print_that_ended_from_paused_was_cancelled(
        duet: tuple[DuetClient, FakeDuet, StandIn]) -> None:
    client, fake, _ = duet
    fake.status, fake.file, fake.seq = "processing", "mes-j1.gcode", 1
    assert (await client.status()).state == "printing"
    fake.status = "paused"
    assert (await client.status()).state == "paused"
    fake.status = "cancelling"
    assert (await client.status()).state == "printing"
    fake.status = "idle"
    ended = await client.status()
    assert (ended.state, ended.file_name) == ("idle", None)


async def test_cancel_pauses_first_then_m0(duet: tuple[DuetClient, FakeDuet, StandIn]) -> None:
    client, fake, _ = duet
    fake.status, fake.file, fake.seq = "paused", "mes-j1.gcode", 1
    await client.cancel()
    assert fake.gcodes == ["M0"]
    fake.gcodes.clear()
    fake.status, fake.pause_takes_effect = "processing", True
    await client.cancel()
    assert fake.gcodes == ["M25", "M0"]


async def test_start_pause_resume_upload_and_delete(
        duet: tuple[DuetClient, FakeDuet, StandIn]) -> None:
    client, fake, server = duet
    await client.upload("job 1.gcode", b"G28\n")
    upload = server.sent("POST", "/rr_upload")
    assert upload.url.params["name"] == "0:/gcodes/job 1.gcode"
    assert upload.content == b"G28\n"  # raw, not multipart
    await client.start("job 1.gcode")
    await client.pause()
    await client.resume()
    assert fake.gcodes == ['M32 "0:/gcodes/job 1.gcode"', "M25", "M24"]
    await client.delete_file("job 1.gcode")
    fake.delete_err = 1  # missing: fine
    await client.delete_file("job 1.gcode")
    fake.status, fake.file, fake.seq = "processing", "job 1.gcode", 1
    with pytest.raises(PrinterBusy):  # open: the one being printed
        await client.delete_file("job 1.gcode")


async def test_a_wrong_password_is_refused_and_a_lost_session_renewed(
        duet: tuple[DuetClient, FakeDuet, StandIn]) -> None:
    client, fake, server = duet
    assert (await client.status()).state == "idle"
    fake.sessions.clear()  # the printer restarted, or the session idled out
    assert (await client.status()).state == "idle"
    assert len([r for r in server.requests if r.url.path == "/rr_connect"]) == 2
    wrong = DuetClient(server.url, password="nope")
    try:
        with pytest.raises(PrinterRefused, match="machine password"):
            await wrong.status()
    finally:
        await wrong.aclose()


@pytest.mark.parametrize(("status", "state"), [
    ("starting", "offline"), ("updating", "offline"), ("off", "offline"),
    ("halted", "error"), ("busy", "idle"), ("pausing", "paused"), ("resuming", "printing")])
async def test_status_words(duet: tuple[DuetClient, FakeDuet, StandIn], status: str,
                            state: str) -> None:
    client, fake, _ = duet
    fake.status, fake.file, fake.seq = status, "mes-x.gcode", 1
    assert (await client.status()).state == state


async def test_garbage_is_a_printer_error(duet: tuple[DuetClient, FakeDuet, StandIn]) -> None:
    client, _, server = duet
    server.routes[("GET", "/rr_model")] = httpx.Response(200, content=b"{nope")
    with pytest.raises(PrinterError):
        await client.status()
    server.routes[("GET", "/rr_model")] = httpx.Response(
        200, content=json.dumps({"key": "", "flags": "", "result": {"state": {}}}).encode())
    with pytest.raises(PrinterError, match=r"no state\.status"):
        await client.status()
