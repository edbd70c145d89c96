"""A real OctoPrint (Virtual Printer) driven by our workers through the REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.farm_helpers import eventually, running_farm
from tests.real_octoprint import OctoPrintServer, write_gcode


async def register(api: httpx.AsyncClient, octoprint: OctoPrintServer) -> None:
    spool = {"id": "petg", "type": "PETG", "color": "orange", "total_weight_in_grams": 1000}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    printer = {"id": "octo", "api": "OctoPrint", "url": octoprint.base_url,
               "api_key": octoprint.api_key, "worker": True, "filament_id": "petg",
               "opcua_name": "Octo1"}
    assert (await api.post("/api/v1/printers", json=printer)).status_code == 201


async def submit(api: httpx.AsyncClient, job_id: str, gcode: Path) -> None:
    """A multipart job: the G-code file and the job's fields in one request."""
    response = await api.post("/api/v1/print_jobs",
                              files={"file": (gcode.name, gcode.read_bytes())},
                              data={"id": job_id, "filament_id": "petg",
                                    "print_weight_in_grams": "42"})
    assert response.status_code == 201, response.text
    assert response.json()["file_id"] is not None


async def status_of(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await api.get(f"/api/v1/print_jobs/{job_id}")).json()
    return data


async def test_job_goes_queued_running_done_on_real_octoprint(
        tmp_path: Path, octoprint: OctoPrintServer) -> None:
    gcode = write_gcode(tmp_path / "benchy.gcode", seconds=3)
    async with running_farm(tmp_path, printer_worker_interval=0.25) as (_, api):
        await register(api, octoprint)
        await submit(api, "j1", gcode)
        seen: list[str] = []

        async def done() -> bool:
            job = await status_of(api, "j1")
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            return bool(job["status"] == "Done")

        await eventually(done, 60, "the job Done")
        assert seen[0] == "Queued" and "Running" in seen
        history = (await api.get("/api/v1/print_jobs/j1/history")).json()
        assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
        spool = (await api.get("/api/v1/filaments/petg")).json()
        assert spool["remaining_weight_in_grams"] == 1000 - 42
        name = (await status_of(api, "j1"))["printer_filename"]

        def deleted() -> bool:
            return octoprint.client.get(f"/api/files/local/{name}").status_code == 404

        await eventually_sync(deleted, 10, "the file deleted from OctoPrint")
        async def printer_finished() -> dict[str, Any] | None:
            status: dict[str, Any] = (await api.get("/api/v1/printers/octo/status")).json()
            return status if status["state"] in ("finished", "idle") else None

        status = await eventually(printer_finished, 10, "the printer's status to show the end")
        assert status["bed_target"] is not None and status["age_seconds"] < 10


async def test_cancel_stops_the_real_printer(tmp_path: Path,
                                             octoprint: OctoPrintServer) -> None:
    gcode = write_gcode(tmp_path / "long.gcode", seconds=30)
    async with running_farm(tmp_path, printer_worker_interval=0.25) as (_, api):
        await register(api, octoprint)
        await submit(api, "long", gcode)

        async def running() -> bool:
            return (await status_of(api, "long"))["status"] == "Running"

        await eventually(running, 30, "the job Running")
        assert octoprint.job()["state"].startswith("Printing")
        canceled = await api.post("/api/v1/print_jobs/long/status",
                                  params={"status": "canceled"})
        assert canceled.json()["status"] == "Canceled"

        def stopped() -> bool:
            job = octoprint.job()
            return job["state"] == "Operational" and job["progress"]["completion"] is None

        await eventually_sync(stopped, 15, "OctoPrint to stop printing")
        name = (await status_of(api, "long"))["printer_filename"]

        def file_gone() -> bool:
            return octoprint.client.get(f"/api/files/local/{name}").status_code == 404

        await eventually_sync(file_gone, 15, "the cancelled job's file deleted from OctoPrint")
        spool = (await api.get("/api/v1/filaments/petg")).json()
        assert spool["remaining_weight_in_grams"] == 1000
        assert spool["reserved_weight_in_grams"] == 0


async def eventually_sync(check: Any, timeout: float, what: str) -> None:
    async def wrapped() -> bool:
        return bool(check())

    await eventually(wrapped, timeout, what)
