"""The Moonraker emulator (`mock-printer --api Moonraker`) driven by our workers: whole jobs,
a print started at the printer, a Klipper shutdown mid-print, pause and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.emulators import StartEmulator
from tests.farm_helpers import GCODE, emulated_printer, eventually, running_farm, upload

KEY = {"X-Api-Key": "mockkey"}


async def job_of(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await api.get(f"/api/v1/print_jobs/{job_id}")).json()
    return data


async def test_moonraker_jobs_done_once_and_the_printers_own_print_recorded(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("Moonraker", count=1, job_time=1.5)
    async with running_farm(tmp_path, printer_worker_interval=0.2) as (_, api):
        await emulated_printer(api, "voron", "Moonraker", emulator.url(0))
        assert (await api.get("/api/v1/printers/voron")).json()["api"] == "Moonraker"
        stored = await upload(api)
        for job_id in ("k1", "k2"):
            created = await api.post("/api/v1/print_jobs", json={
                "id": job_id, "filament_id": "pla", "file_id": stored["id"],
                "print_weight_in_grams": 25})
            assert created.status_code == 201

        async def both_done() -> bool:
            return [(await job_of(api, j))["status"] for j in ("k1", "k2")] == ["Done", "Done"]

        await eventually(both_done, 40, "k1 and k2 Done on the Klipper printer")
        history = (await api.get("/api/v1/print_jobs/k1/history")).json()
        assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
        assert (await api.get("/api/v1/filaments/pla")).json()["remaining_weight_in_grams"] \
            == 750
        status = emulator.status(0)
        assert status["starts"] == {"mes-k1.gcode": 1, "mes-k2.gcode": 1}

        # A print started at the printer (upload with print=true) is recorded, not stopped.
        started = httpx.post(f"{emulator.url(0)}/server/files/upload", headers=KEY,
                             files={"file": ("manual.gcode", GCODE)},
                             data={"root": "gcodes", "print": "true"})
        assert started.status_code == 201 and started.json()["print_started"] is True

        async def external() -> dict[str, Any] | None:
            jobs = (await api.get("/api/v1/print_jobs")).json()
            found = [j for j in jobs if not j["from_server"]]
            return found[0] if found else None

        job = await eventually(external, 15, "the printer's own job to be recorded")
        assert job["filepath"] == "manual.gcode" and job["assigned_printer_id"] == "voron"

        async def external_done() -> bool:
            return (await job_of(api, job["id"]))["status"] == "Done"

        await eventually(external_done, 15, "the printer's own job to finish")


async def test_moonraker_pause_resume_and_a_klipper_shutdown_mid_print(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("Moonraker", count=1, job_time=30)
    async with running_farm(tmp_path, printer_worker_interval=0.2) as (_, api):
        await emulated_printer(api, "voron", "Moonraker", emulator.url(0))
        stored = await upload(api)
        assert (await api.post("/api/v1/print_jobs", json={
            "id": "k1", "filament_id": "pla", "file_id": stored["id"],
            "print_weight_in_grams": 25})).status_code == 201

        async def printing() -> bool:
            shown = (await api.get("/api/v1/printers/voron/status")).json()
            return bool(emulator.status(0)["phase"] == "PRINTING"
                        and shown["state"] == "printing" and shown["file_name"])

        await eventually(printing, 20, "the Klipper printer to print k1")
        paused = await api.post("/api/v1/print_jobs/k1/pause")
        assert paused.status_code in (200, 202), paused.text
        await eventually(lambda: _seen(api, emulator, "PAUSED", "paused"), 15,
                         "the print to pause, and the farm to see it")
        resumed = await api.post("/api/v1/print_jobs/k1/resume")
        assert resumed.status_code in (200, 202), resumed.text
        await eventually(lambda: _seen(api, emulator, "PRINTING", "printing"), 15,
                         "the print to resume, and the farm to see it")

        # Klipper shuts down (an MCU lost): the printer shows the error in Klipper's words.
        assert httpx.post(f"{emulator.url(0)}/printer/emergency_stop",
                          headers=KEY).status_code == 200

        async def error_shown() -> dict[str, Any] | None:
            shown: dict[str, Any] = (await api.get("/api/v1/printers/voron/status")).json()
            return shown if shown["state"] == "error" else None

        shown = await eventually(error_shown, 15, "the printer to show Klipper's shutdown")
        assert shown["error"].startswith(
            "Klipper is in state 'shutdown' (Shutdown due to webhooks request Once the ")

        async def ended() -> dict[str, Any] | None:
            job = await job_of(api, "k1")
            return job if job["status"] != "Running" else None

        job = await eventually(ended, 30, "k1 to end after the shutdown")
        assert job["status"] == "Canceled", job
        assert emulator.status(0)["starts"] == {"mes-k1.gcode": 1}


async def _seen(api: httpx.AsyncClient, emulator: Any, phase: str, state: str) -> bool:
    """The emulated printer is in `phase` and the farm shows it `state`."""
    shown = (await api.get("/api/v1/printers/voron/status")).json()
    return bool(emulator.status(0)["phase"] == phase and shown["state"] == state)
