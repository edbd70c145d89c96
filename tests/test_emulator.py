"""Tests of ``mock-printer``, the OctoPrint/PrusaLink emulator.

The HTTP tests start the emulator as a real subprocess on free loopback ports and observe it
by polling with deadlines; the core's time accounting is tested with a fake clock.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import pytest

from mes.emulator.printer import AMBIENT, Phase, Printer, PrinterError
from tests.emulators import ROOT, StartEmulator
from tests.polling import wait_for

KEY = "mockkey"
OCTO = {"X-Api-Key": KEY}
PRUSA = {"X-Api-Key": KEY}
GCODE = b"G28\nG1 X10 Y10 Z0.2\nG1 X20 E1\n"


# -- helpers ------------------------------------------------------------------------------


def octo_state(client: httpx.Client) -> str:
    """OctoPrint ``state.text`` from /api/printer."""
    state: str = client.get("/api/printer").json()["state"]["text"]
    return state


def octo_upload(
    client: httpx.Client, name: str, *, select: bool = False, print_: bool = False
) -> httpx.Response:
    """Multipart upload to OctoPrint."""
    data = {"select": str(select).lower(), "print": str(print_).lower()}
    files = {"file": (name, GCODE, "application/octet-stream")}
    return client.post("/api/files/local", data=data, files=files)


def prusa_upload(
    client: httpx.Client, name: str, *, print_after: bool = False, overwrite: bool = False
) -> httpx.Response:
    """Raw PUT upload to PrusaLink."""
    headers = {
        "Content-Type": "application/octet-stream",
        "Print-After-Upload": "?1" if print_after else "?0",
        "Overwrite": "?1" if overwrite else "?0",
    }
    return client.put(f"/api/v1/files/local/{name}", content=GCODE, headers=headers)


def prusa_state(client: httpx.Client) -> str:
    """PrusaLink ``printer.state`` from /api/v1/status."""
    state: str = client.get("/api/v1/status").json()["printer"]["state"]
    return state


# -- core, with a fake clock --------------------------------------------------------------


class FakeClock:
    """A settable clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def phase_of(printer: Printer) -> Phase:
    """The printer's phase (a call, so that mypy does not narrow it across steps)."""
    return printer.phase


def test_core_progress_excludes_paused_time_and_finishes_on_time() -> None:
    clock = FakeClock()
    printer = Printer(1, job_time=10.0, clock=clock, wall=clock)
    printer.store("a.gcode", GCODE)
    printer.start("a.gcode")
    clock.t += 4
    assert printer.progress() == pytest.approx(40.0)
    printer.pause()
    clock.t += 100
    assert printer.progress() == pytest.approx(40.0)
    assert phase_of(printer) is Phase.PAUSED
    printer.resume()
    clock.t += 5.9
    assert phase_of(printer) is Phase.PRINTING
    assert printer.time_left() == pytest.approx(0.1)
    clock.t += 50
    assert phase_of(printer) is Phase.FINISHED
    assert printer.progress() == 100.0
    assert printer.print_time() == pytest.approx(10.0)
    assert printer.history["a.gcode"].last_success is True
    with pytest.raises(PrinterError) as conflict:
        printer.stop()
    assert conflict.value.status == 409


def test_core_heaters_ramp_up_while_printing_and_cool_after() -> None:
    clock = FakeClock()
    printer = Printer(1, job_time=10.0, clock=clock, wall=clock)
    printer.store("a.gcode", GCODE)
    printer.start("a.gcode")
    assert printer.temperatures()["tool0"] == (AMBIENT, 215.0)
    clock.t += 3
    nozzle, _ = printer.temperatures()["tool0"]
    bed, _ = printer.temperatures()["bed"]
    assert 150 < nozzle < 215 and 45 < bed < 60
    clock.t += 7
    hot = printer.temperatures()["tool0"][0]
    clock.t += 3
    cooling, target = printer.temperatures()["tool0"]
    assert target == 0.0 and AMBIENT < cooling < hot
    clock.t += 60
    assert printer.temperatures()["tool0"][0] == AMBIENT


# -- OctoPrint ----------------------------------------------------------------------------


def test_octoprint_auth(start_emulator: StartEmulator) -> None:
    emu = start_emulator("OctoPrint")
    with emu.client() as anon:
        assert anon.get("/api/version").status_code == 403
        assert anon.get("/api/printer", headers={"X-Api-Key": "wrong"}).status_code == 403
        assert anon.post("/api/job", json={"command": "cancel"}).status_code == 403
        assert anon.get("/emulator/status").json()["api"] == "OctoPrint"
    with emu.client(headers=OCTO) as client:
        version = client.get("/api/version")
        assert version.status_code == 200 and version.json()["api"] == "0.1"


def test_octoprint_upload_print_finish(start_emulator: StartEmulator) -> None:
    emu = start_emulator("OctoPrint", job_time=1.5)
    with emu.client(headers=OCTO) as client:
        assert client.get("/api/job").json()["progress"]["completion"] is None
        upload = octo_upload(client, "cube.gcode", print_=True)
        assert upload.status_code == 201
        assert upload.json()["effectivePrint"] is True
        printer = client.get("/api/printer").json()
        assert printer["state"]["text"] == "Printing"
        assert printer["state"]["flags"]["printing"] is True
        assert printer["state"]["flags"]["ready"] is False
        assert printer["temperature"]["tool0"]["target"] == 215.0
        assert printer["temperature"]["bed"]["target"] == 60.0
        job = client.get("/api/job").json()
        assert job["job"]["file"]["name"] == "cube.gcode"
        assert job["state"] == "Printing"
        assert 0.0 <= job["progress"]["completion"] < 100.0
        assert emu.status()["current_file"] == "cube.gcode"

        def warmed() -> bool:
            return bool(client.get("/api/printer").json()["temperature"]["tool0"]["actual"] > 30)

        wait_for(warmed, what="the nozzle to heat")
        wait_for(lambda: octo_state(client) == "Operational", what="the print to finish")
        job = client.get("/api/job").json()
        assert job["state"] == "Operational"
        assert job["progress"]["completion"] == 100.0
        assert job["job"]["file"]["name"] == "cube.gcode"
        info = client.get("/api/files/local/cube.gcode").json()
        assert info["prints"]["last"]["success"] is True
        status = emu.status()
        assert status["state"] == "Operational"
        assert status["starts"] == {"cube.gcode": 1} and status["total_starts"] == 1
        assert status["current_file"] is None
        # a finished printer starts again
        assert client.post("/api/job", json={"command": "start"}).status_code == 204
        assert octo_state(client) == "Printing"
        assert emu.status()["starts"] == {"cube.gcode": 2}


def test_octoprint_busy_conflicts(start_emulator: StartEmulator) -> None:
    emu = start_emulator("OctoPrint", job_time=60)
    with emu.client(headers=OCTO) as client:
        # nothing selected: start is accepted and does nothing
        assert client.post("/api/job", json={"command": "start"}).status_code == 204
        assert octo_state(client) == "Operational"
        assert octo_upload(client, "a.gcode").status_code == 201
        assert octo_state(client) == "Operational"
        select = {"command": "select", "print": True}
        assert client.post("/api/files/local/a.gcode", json=select).status_code == 204
        assert octo_state(client) == "Printing"
        second = octo_upload(client, "b.gcode", print_=True)
        assert second.status_code == 201
        assert second.json()["effectivePrint"] is False
        assert client.get("/api/job").json()["job"]["file"]["name"] == "a.gcode"
        assert client.post("/api/files/local/b.gcode", json=select).status_code == 409
        assert client.post("/api/job", json={"command": "start"}).status_code == 409
        assert client.delete("/api/files/local/a.gcode").status_code == 409
        assert octo_upload(client, "a.gcode").status_code == 409
        assert client.delete("/api/files/local/b.gcode").status_code == 204
        assert client.delete("/api/files/local/b.gcode").status_code == 404
        assert client.get("/api/files/local/b.gcode").status_code == 404
        assert client.post("/api/files/local/zzz.gcode", json=select).status_code == 404
        assert emu.status()["starts"] == {"a.gcode": 1}
        assert emu.status()["total_starts"] == 1


def test_octoprint_pause_resume_cancel(start_emulator: StartEmulator) -> None:
    emu = start_emulator("OctoPrint", job_time=60)
    with emu.client(headers=OCTO) as client:
        pause = {"command": "pause", "action": "pause"}
        resume = {"command": "pause", "action": "resume"}
        cancel = {"command": "cancel"}
        assert client.post("/api/job", json=cancel).status_code == 409
        assert client.post("/api/job", json=pause).status_code == 409
        assert octo_upload(client, "p.gcode", print_=True).json()["effectivePrint"] is True
        assert client.post("/api/job", json=pause).status_code == 204
        flags = client.get("/api/printer").json()["state"]["flags"]
        assert flags["paused"] is True and flags["printing"] is False
        assert client.get("/api/job").json()["state"] == "Paused"
        assert emu.status()["state"] == "Paused"
        assert client.post("/api/job", json=resume).status_code == 204
        assert octo_state(client) == "Printing"
        assert client.post("/api/job", json={"command": "pause"}).status_code == 204  # toggle
        assert octo_state(client) == "Paused"
        assert client.post("/api/job", json=cancel).status_code == 204
        assert octo_state(client) == "Operational"
        progress = client.get("/api/job").json()["progress"]
        assert progress["completion"] is None
        assert client.post("/api/job", json=cancel).status_code == 409
        info = client.get("/api/files/local/p.gcode").json()
        assert info["prints"]["last"]["success"] is False
        assert client.delete("/api/files/local/p.gcode").status_code == 204
        assert client.get("/api/job").json()["job"]["file"]["name"] is None


def test_octoprint_connection_and_targets(start_emulator: StartEmulator) -> None:
    emu = start_emulator("OctoPrint")
    with emu.client(headers=OCTO) as client:
        assert client.get("/api/connection").json()["current"]["state"] == "Operational"
        tool = {"command": "target", "targets": {"tool0": 200}}
        assert client.post("/api/printer/tool", json=tool).status_code == 204
        bed = {"command": "target", "target": 55}
        assert client.post("/api/printer/bed", json=bed).status_code == 204
        temps = client.get("/api/printer").json()["temperature"]
        assert temps["tool0"]["target"] == 200 and temps["bed"]["target"] == 55
        assert client.post("/api/connection", json={"command": "disconnect"}).status_code == 204
        assert client.get("/api/connection").json()["current"]["state"] == "Closed"
        offline = client.get("/api/printer")
        assert offline.status_code == 409
        assert "not operational" in offline.text
        assert client.get("/api/job").json()["state"] == "Offline"
        assert octo_upload(client, "x.gcode", print_=True).json()["effectivePrint"] is False
        assert emu.status()["total_starts"] == 0
        bad = {"command": "connect", "port": "/dev/ttyUSB9"}
        assert client.post("/api/connection", json=bad).status_code == 400
        connect = {"command": "connect", "port": "VIRTUAL", "baudrate": 115200}
        assert client.post("/api/connection", json=connect).status_code == 204
        assert octo_state(client) == "Operational"


# -- PrusaLink ----------------------------------------------------------------------------


def test_prusalink_auth(start_emulator: StartEmulator) -> None:
    emu = start_emulator("PrusaLink")
    with emu.client() as anon:
        missing = anon.get("/api/v1/status")
        assert missing.status_code == 401
        challenge = missing.headers["WWW-Authenticate"]
        assert challenge.startswith("Digest ") and 'realm="Administrator"' in challenge
        wrong = anon.get("/api/v1/status", headers={"X-Api-Key": "wrong"})
        assert wrong.status_code == 403
        assert set(wrong.json()) >= {"code", "title", "text", "url"}
        digest = anon.get("/api/v1/info", auth=httpx.DigestAuth("maker", KEY))
        assert digest.status_code == 200
        bad_digest = anon.get("/api/v1/info", auth=httpx.DigestAuth("maker", "nope"))
        assert bad_digest.status_code == 401
        assert anon.get("/emulator/status").json()["api"] == "PrusaLink"
    with emu.client(headers=PRUSA) as client:
        version = client.get("/api/version").json()
        assert version["capabilities"]["upload-by-put"] is True
        storage = client.get("/api/v1/storage").json()["storage_list"]
        assert storage[0]["path"] == "/local"


def test_prusalink_upload_print_finish(start_emulator: StartEmulator) -> None:
    emu = start_emulator("PrusaLink", job_time=1.5)
    with emu.client(headers=PRUSA) as client:
        no_job = client.get("/api/v1/job")
        assert no_job.status_code == 204 and no_job.content == b""
        assert prusa_state(client) == "IDLE"
        assert prusa_upload(client, "cube.gcode", print_after=True).status_code == 201
        status = client.get("/api/v1/status").json()
        assert status["printer"]["state"] == "PRINTING"
        assert status["printer"]["target_nozzle"] == 215.0
        assert status["printer"]["target_bed"] == 60.0
        job_id = status["job"]["id"]
        job = client.get("/api/v1/job").json()
        assert job["id"] == job_id and job["state"] == "PRINTING"
        assert job["file"]["name"] == "cube.gcode" and job["file"]["path"] == "/local"
        assert 0.0 <= job["progress"] < 100.0
        head = client.head("/api/v1/files/local/cube.gcode")
        assert head.status_code == 200 and head.headers["Currently-Printed"] == "?1"

        def warmed() -> bool:
            return bool(client.get("/api/v1/status").json()["printer"]["temp_nozzle"] > 30)

        wait_for(warmed, what="the nozzle to heat")
        wait_for(lambda: prusa_state(client) == "FINISHED", what="the print to finish")
        job = client.get("/api/v1/job").json()
        assert job["id"] == job_id and job["state"] == "FINISHED" and job["progress"] == 100.0
        status = emu.status()
        assert status["state"] == "FINISHED"
        assert status["starts"] == {"cube.gcode": 1} and status["total_starts"] == 1
        # a finished printer starts again, with a new job id
        assert client.post("/api/v1/files/local/cube.gcode").status_code == 204
        assert client.get("/api/v1/job").json()["id"] != job_id
        assert emu.status()["starts"] == {"cube.gcode": 2}


def test_prusalink_busy_conflicts(start_emulator: StartEmulator) -> None:
    emu = start_emulator("PrusaLink", job_time=60)
    with emu.client(headers=PRUSA) as client:
        assert prusa_upload(client, "a.gcode").status_code == 201
        exists = prusa_upload(client, "a.gcode")
        assert exists.status_code == 409
        assert set(exists.json()) >= {"code", "title", "text", "url"}
        assert prusa_upload(client, "a.gcode", overwrite=True).status_code == 201
        assert client.post("/api/v1/files/local/a.gcode").status_code == 204
        assert prusa_state(client) == "PRINTING"
        assert prusa_upload(client, "b.gcode", print_after=True).status_code == 409
        assert client.get("/api/v1/files/local/b.gcode").status_code == 404
        assert prusa_upload(client, "b.gcode").status_code == 201
        assert client.post("/api/v1/files/local/b.gcode").status_code == 409
        assert client.delete("/api/v1/files/local/a.gcode").status_code == 409
        assert prusa_upload(client, "a.gcode", overwrite=True).status_code == 409
        assert client.delete("/api/v1/files/local/b.gcode").status_code == 204
        assert client.delete("/api/v1/files/local/b.gcode").status_code == 404
        assert client.post("/api/v1/files/local/zzz.gcode").status_code == 404
        multipart = client.put("/api/v1/files/local/m.gcode", files={"file": ("m.gcode", GCODE)})
        assert multipart.status_code == 415
        assert client.get("/api/v1/job").json()["file"]["name"] == "a.gcode"
        assert emu.status()["starts"] == {"a.gcode": 1}


def test_prusalink_pause_resume_stop(start_emulator: StartEmulator) -> None:
    emu = start_emulator("PrusaLink", job_time=60)
    with emu.client(headers=PRUSA) as client:
        assert client.put("/api/v1/job/1/pause").status_code == 404
        assert prusa_upload(client, "p.gcode", print_after=True).status_code == 201
        job_id = client.get("/api/v1/job").json()["id"]
        assert client.put(f"/api/v1/job/{job_id + 1}/pause").status_code == 404
        assert client.put(f"/api/v1/job/{job_id}/resume").status_code == 409
        assert client.put(f"/api/v1/job/{job_id}/pause").status_code == 204
        assert prusa_state(client) == "PAUSED"
        assert client.get("/api/v1/job").json()["state"] == "PAUSED"
        assert client.put(f"/api/v1/job/{job_id}/pause").status_code == 409
        assert client.put(f"/api/v1/job/{job_id}/resume").status_code == 204
        assert prusa_state(client) == "PRINTING"
        assert client.delete(f"/api/v1/job/{job_id + 1}").status_code == 404
        assert client.delete(f"/api/v1/job/{job_id}").status_code == 204
        assert prusa_state(client) == "STOPPED"
        assert client.get("/api/v1/job").json()["state"] == "STOPPED"
        assert client.delete(f"/api/v1/job/{job_id}").status_code == 409
        assert client.put(f"/api/v1/job/{job_id}/pause").status_code == 409
        assert client.delete("/api/v1/files/local/p.gcode").status_code == 204
        status = emu.status()
        assert status["state"] == "STOPPED" and status["total_starts"] == 1


# -- several printers and process lifecycle -----------------------------------------------


@pytest.mark.parametrize("api", ["OctoPrint", "PrusaLink"])
def test_count_three_printers_are_independent(start_emulator: StartEmulator, api: str) -> None:
    emu = start_emulator(api, count=3, job_time=60)
    with emu.client(1, headers=OCTO) as middle:
        if api == "OctoPrint":
            assert octo_upload(middle, "only.gcode", print_=True).status_code == 201
        else:
            assert prusa_upload(middle, "only.gcode", print_after=True).status_code == 201
    statuses = [emu.status(i) for i in range(3)]
    assert [s["port"] for s in statuses] == [emu.port, emu.port + 1, emu.port + 2]
    assert [s["total_starts"] for s in statuses] == [0, 1, 0]
    assert [s["files"] for s in statuses] == [[], ["only.gcode"], []]
    assert statuses[1]["current_file"] == "only.gcode"
    idle = "Operational" if api == "OctoPrint" else "IDLE"
    assert statuses[0]["state"] == statuses[2]["state"] == idle


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exits_cleanly_on_signal(start_emulator: StartEmulator, sig: int) -> None:
    emu = start_emulator("PrusaLink", count=2)
    with emu.client(headers=PRUSA) as client:
        assert client.get("/api/v1/status").status_code == 200
    assert emu.stop(sig) == 0
    assert "Traceback" not in emu.log.read_text()


def test_port_in_use_fails_fast() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cmd = [sys.executable, "-m", "mes.emulator.cli", "--api", "OctoPrint", "--port", str(port)]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"cannot listen" in result.stderr


def test_core_heating_comes_before_moving_and_is_counted() -> None:
    clock = FakeClock()
    printer = Printer(1, job_time=10.0, clock=clock, wall=clock, heat_time=5.0)
    printer.store("a.gcode", GCODE)
    printer.store("b.gcode", GCODE)
    printer.start("a.gcode")
    clock.t += 4
    assert phase_of(printer) is Phase.PRINTING
    assert printer.progress() == 0.0 and printer.print_time() == 0.0
    printer.stop()  # cancelled while heating: it never moved
    assert printer.summary()["stops"] == {"a.gcode": 1}
    assert printer.summary()["moved"] == {}
    printer.start("b.gcode")
    clock.t += 7
    assert printer.progress() == pytest.approx(20.0)
    assert printer.summary()["moved"] == {"b.gcode": 1}
    clock.t += 8.5
    assert phase_of(printer) is Phase.FINISHED
    assert printer.summary()["moved"] == {"b.gcode": 1}
    assert printer.print_time() == pytest.approx(10.0)
    assert printer.summary()["stops"] == {"a.gcode": 1}
