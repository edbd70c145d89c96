"""A printer whose bed waits to be cleared is not free: the grid's `idle` filter leaves it
out and `bed_to_clear` finds it, until an operator clears the bed."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.farm_helpers import eventually, running_farm, upload


async def _ids(api: httpx.AsyncClient, state: str) -> list[str]:
    cards = (await api.get("/api/v1/dashboard/printers", params={"state": state})).json()
    return [card["id"] for card in cards]


async def test_a_bed_to_clear_is_its_own_state(tmp_path: Path) -> None:
    async with running_farm(tmp_path, auto_clear_bed=False, mock_printer_job_time=1) as (
            _, api):
        spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 100}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        for pid in ("m1", "m2"):
            printer = {"id": pid, "api": "Mock", "worker": True, "filament_id": "pla"}
            assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
        stored = await upload(api)
        assert (await api.post("/api/v1/print_jobs", json={
            "id": "j", "printer_id": "m1", "filament_id": "pla", "file_id": stored["id"],
            "print_weight_in_grams": 5})).status_code == 201

        async def done() -> bool:
            job = (await api.get("/api/v1/print_jobs/j")).json()
            return bool(job["status"] == "Done")

        await eventually(done, 30, "the job to be Done")

        async def settled() -> bool:
            return await _ids(api, "bed_to_clear") == ["m1"] and await _ids(api, "idle") == [
                "m2"]

        await eventually(settled, 15, "m1 waiting for its bed, m2 free")
        cleared = await api.post("/api/v1/printers/m1/bed_cleared")
        assert cleared.status_code == 200
        assert await _ids(api, "bed_to_clear") == []

        async def both_free() -> bool:
            return await _ids(api, "idle") == ["m1", "m2"]

        await eventually(both_free, 15, "both printers free")
