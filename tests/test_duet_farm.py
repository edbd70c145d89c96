"""The Duet emulator (`mock-printer --api Duet`, RepRapFirmware's rr_ API) driven by our
workers: whole jobs done once, a print started at the printer, pause, resume, a cancel
(paused first, as the firmware needs) and an emergency stop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.emulators import Emulator, StartEmulator
from tests.farm_helpers import emulated_printer, eventually, running_farm, upload


async def job_of(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await api.get(f"/api/v1/print_jobs/{job_id}")).json()
    return data


@contextlib.contextmanager
def _at_printer(emulator: Emulator) -> Iterator[httpx.Client]:
    """A client of the Duet itself, signed in with its machine password."""
    with httpx.Client(base_url=emulator.url(0), timeout=5) as client:
        assert client.get("/rr_connect", params={"password": "mockkey"}).json()["err"] == 0
        yield client


async def test_duet_jobs_done_once_and_the_printers_own_print_recorded(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("Duet", count=1, job_time=1.5)
    async with running_farm(tmp_path, printer_worker_interval=0.2) as (_, api):
        await emulated_printer(api, "duet", "Duet", emulator.url(0))
        stored = await upload(api)
        for job_id in ("d1", "d2"):
            assert (await api.post("/api/v1/print_jobs", json={
                "id": job_id, "filament_id": "pla", "file_id": stored["id"],
                "print_weight_in_grams": 25})).status_code == 201

        async def both_done() -> bool:
            return [(await job_of(api, j))["status"] for j in ("d1", "d2")] == ["Done", "Done"]

        await eventually(both_done, 40, "d1 and d2 Done on the Duet")
        history = (await api.get("/api/v1/print_jobs/d1/history")).json()
        assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
        assert (await api.get("/api/v1/filaments/pla")).json()["remaining_weight_in_grams"] \
            == 750
        assert emulator.status(0)["starts"] == {"mes-d1.gcode": 1, "mes-d2.gcode": 1}

        with _at_printer(emulator) as duet:  # a print started at the printer itself
            stored_there = duet.post("/rr_upload", params={"name": "0:/gcodes/manual.gcode"},
                                     content=b"G28\nG1 X10\n")
            assert stored_there.json() == {"err": 0}
            duet.get("/rr_gcode", params={"gcode": 'M32 "0:/gcodes/manual.gcode"'})

        async def external() -> dict[str, Any] | None:
            jobs = (await api.get("/api/v1/print_jobs")).json()
            found = [j for j in jobs if not j["from_server"]]
            return found[0] if found else None

        job = await eventually(external, 15, "the printer's own job to be recorded")
        assert job["filepath"] == "manual.gcode" and job["assigned_printer_id"] == "duet"

        async def external_done() -> bool:
            return (await job_of(api, job["id"]))["status"] == "Done"

        await eventually(external_done, 15, "the printer's own job to finish")


async def test_duet_pause_resume_cancel_and_an_emergency_stop(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("Duet", count=1, job_time=60)
    async with running_farm(tmp_path, printer_worker_interval=0.2) as (_, api):
        await emulated_printer(api, "duet", "Duet", emulator.url(0))
        stored = await upload(api)
        for job_id in ("d1", "d2"):
            assert (await api.post("/api/v1/print_jobs", json={
                "id": job_id, "filament_id": "pla", "file_id": stored["id"],
                "print_weight_in_grams": 25})).status_code == 201

        async def seen(phase: str, state: str) -> bool:
            shown = (await api.get("/api/v1/printers/duet/status")).json()
            return bool(emulator.status(0)["phase"] == phase and shown["state"] == state)

        await eventually(lambda: seen("PRINTING", "printing"), 20, "d1 printing")
        assert (await api.post("/api/v1/print_jobs/d1/pause")).status_code == 200
        await eventually(lambda: seen("PAUSED", "paused"), 15, "d1 paused")
        assert (await api.post("/api/v1/print_jobs/d1/resume")).status_code == 200
        await eventually(lambda: seen("PRINTING", "printing"), 15, "d1 printing again")
        # A cancel while printing: the printer is paused first, then M0.
        canceled = await api.post("/api/v1/print_jobs/d1/status",
                                  params={"status": "Canceled"})
        assert canceled.status_code == 200, canceled.text

        async def stopped() -> bool:
            return bool(emulator.status(0)["stops"].get("mes-d1.gcode") == 1)

        await eventually(stopped, 20, "the Duet to stop d1")
        assert (await job_of(api, "d1"))["status"] == "Canceled"

        # d2 prints next; an emergency stop (M112) halts the Duet: d2 is lost, and the
        # printer shows the error.
        await eventually(lambda: seen("PRINTING", "printing"), 30, "d2 printing")
        with _at_printer(emulator) as duet:
            duet.get("/rr_gcode", params={"gcode": "M112"})

        async def lost() -> dict[str, Any] | None:
            job = await job_of(api, "d2")
            return job if job["status"] != "Running" else None

        job = await eventually(lost, 20, "d2 to end after the emergency stop")
        assert job["status"] == "Canceled", job
        async def halted() -> dict[str, Any] | None:
            shown: dict[str, Any] = (await api.get("/api/v1/printers/duet/status")).json()
            return shown if shown["state"] == "error" else None

        shown = await eventually(halted, 15, "the printer to show the halt")
        assert shown["error"] == "Duet is halted (emergency stop or a fault); reset it to go on"
        assert emulator.status(0)["starts"] == {"mes-d1.gcode": 1, "mes-d2.gcode": 1}
