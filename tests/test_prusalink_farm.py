"""The PrusaLink emulator (`mock-printer --api PrusaLink`) driven by our workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.emulators import StartEmulator
from tests.farm_helpers import GCODE, eventually, running_farm, upload


async def job_of(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await api.get(f"/api/v1/print_jobs/{job_id}")).json()
    return data


async def test_prusalink_flow_and_busy_printer(tmp_path: Path,
                                               start_emulator: StartEmulator) -> None:
    emulator = start_emulator("PrusaLink", count=1, job_time=1.5)
    async with running_farm(tmp_path, printer_worker_interval=0.2) as (_, api):
        spool = {"id": "abs", "type": "ABS", "color": "white", "total_weight_in_grams": 800}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        printer = {"id": "mk4", "api": "PrusaLink", "url": emulator.url(0), "api_key": "mockkey",
                   "worker": True, "filament_id": "abs"}
        assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
        stored = await upload(api)
        for job_id in ("p1", "p2"):
            created = await api.post("/api/v1/print_jobs", json={
                "id": job_id, "filament_id": "abs", "file_id": stored["id"],
                "print_weight_in_grams": 30})
            assert created.status_code == 201

        async def first_done() -> bool:
            return (await job_of(api, "p1"))["status"] == "Done"

        await eventually(first_done, 30, "p1 Done on the PrusaLink printer")
        history = (await api.get("/api/v1/print_jobs/p1/history")).json()
        assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
        # running_farm clears beds automatically, so p2 follows on the same printer.

        async def second_done() -> bool:
            return (await job_of(api, "p2"))["status"] == "Done"

        await eventually(second_done, 30, "p2 Done after p1")
        assert (await api.get("/api/v1/filaments/abs")).json()["remaining_weight_in_grams"] == 740
        status = emulator.status(0)
        assert status["starts"] == {"mes-p1.gcode": 1, "mes-p2.gcode": 1}
        assert status["total_starts"] == 2

        # A print started at the printer itself is recorded as a job not from the server.
        upload_at_printer = httpx.put(
            f"{emulator.url(0)}/api/v1/files/local/manual.gcode", content=GCODE,
            headers={"X-Api-Key": "mockkey", "Print-After-Upload": "?1", "Overwrite": "?1"})
        assert upload_at_printer.status_code == 201

        async def external() -> dict[str, Any] | None:
            jobs = (await api.get("/api/v1/print_jobs")).json()
            found = [j for j in jobs if not j["from_server"]]
            return found[0] if found else None

        job = await eventually(external, 15, "the printer's own job to be recorded")
        assert job["filepath"] == "manual.gcode" and job["assigned_printer_id"] == "mk4"

        async def external_done() -> bool:
            return (await job_of(api, job["id"]))["status"] == "Done"

        await eventually(external_done, 15, "the printer's own job to finish")
        assert (await api.get("/api/v1/filaments/abs")).json()["remaining_weight_in_grams"] == 740


async def test_prusalink_busy_printer_refuses_and_job_waits(tmp_path: Path,
                                                            start_emulator: StartEmulator) -> None:
    emulator = start_emulator("PrusaLink", count=1, job_time=30)
    # Someone prints at the printer before the farm sends anything.
    taken = httpx.put(f"{emulator.url(0)}/api/v1/files/local/theirs.gcode", content=GCODE,
                      headers={"X-Api-Key": "mockkey", "Print-After-Upload": "?1"})
    assert taken.status_code == 201
    async with running_farm(tmp_path, printer_worker_interval=0.2) as (_, api):
        spool = {"id": "abs", "type": "ABS", "color": "white", "total_weight_in_grams": 800}
        await api.post("/api/v1/filaments", json=spool)
        await api.post("/api/v1/printers", json={
            "id": "mk4", "api": "PrusaLink", "url": emulator.url(0), "api_key": "mockkey",
            "worker": True, "filament_id": "abs"})
        stored = await upload(api)
        await api.post("/api/v1/print_jobs", json={"id": "w", "printer_id": "mk4",
                                                   "filament_id": "abs",
                                                   "file_id": stored["id"],
                                                   "print_weight_in_grams": 10})

        async def recorded() -> bool:
            jobs = (await api.get("/api/v1/print_jobs")).json()
            return any(not j["from_server"] and j["status"] == "Running" for j in jobs)

        await eventually(recorded, 15, "the printer's own print to be recorded")
        assert (await job_of(api, "w"))["status"] == "Queued"
        assert emulator.status(0)["starts"] == {"theirs.gcode": 1}


async def test_print_stopped_at_the_printer_is_reflected(tmp_path: Path,
                                                         start_emulator: StartEmulator) -> None:
    emulator = start_emulator("PrusaLink", count=1, job_time=60)
    async with running_farm(tmp_path, printer_worker_interval=0.2) as (_, api):
        await api.post("/api/v1/filaments", json={"id": "abs", "type": "ABS", "color": "w",
                                                  "total_weight_in_grams": 800})
        await api.post("/api/v1/printers", json={
            "id": "mk4", "api": "PrusaLink", "url": emulator.url(0), "api_key": "mockkey",
            "worker": True, "filament_id": "abs"})
        stored = await upload(api)
        await api.post("/api/v1/print_jobs", json={"id": "s", "filament_id": "abs",
                                                   "file_id": stored["id"],
                                                   "print_weight_in_grams": 10})

        async def running() -> bool:
            return (await job_of(api, "s"))["status"] == "Running"

        await eventually(running, 20, "the job Running")
        printer_job = httpx.get(f"{emulator.url(0)}/api/v1/job",
                                headers={"X-Api-Key": "mockkey"}).json()
        stop = httpx.delete(f"{emulator.url(0)}/api/v1/job/{printer_job['id']}",
                            headers={"X-Api-Key": "mockkey"})
        assert stop.status_code == 204

        async def canceled() -> dict[str, Any] | None:
            job = await job_of(api, "s")
            return job if job["status"] == "Canceled" else None

        await eventually(canceled, 10, "the job Canceled after the stop at the printer")
        history = (await api.get("/api/v1/print_jobs/s/history")).json()
        assert "canceled at the printer" in history[-1]["cause"]
        spool = (await api.get("/api/v1/filaments/abs")).json()
        assert spool["remaining_weight_in_grams"] == 800
