"""The farm at a glance: printers by state for the farm and per group, one tile per
printer, the grid's `attention` filter (longest waiting first, paged), `not_driven`, and
search by printer and by running job (a user's search does not see other users' jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.accounts import make_user
from tests.farm_helpers import GCODE, eventually, running_farm, upload
from tests.ports import free_port


async def _ids(api: httpx.AsyncClient, headers: dict[str, str] | None = None,
               **params: Any) -> list[str]:
    answer = await api.get("/api/v1/dashboard/printers", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return [card["id"] for card in answer.json()]


async def test_overview_attention_and_search(tmp_path: Path) -> None:
    async with running_farm(tmp_path, auto_clear_bed=False, mock_printer_job_time=40) as (
            _, api):
        spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 500}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        printers = [
            {"id": "off1", "api": "OctoPrint", "url": f"http://127.0.0.1:{free_port()}",
             "api_key": "k" * 32, "worker": True, "group": "lab"},
            {"id": "m1", "api": "Mock", "worker": True, "filament_id": "pla", "group": "lab"},
            {"id": "m2", "api": "Mock", "worker": True, "filament_id": "pla", "group": "lab"},
            {"id": "shelf", "model": "Spare MK3", "worker": False, "group": "store"},
        ]
        for printer in printers:
            answer = await api.post("/api/v1/printers", json=printer)
            assert answer.status_code == 201, answer.text
        stored = await upload(api)
        assert (await api.post("/api/v1/print_jobs", json={
            "id": "j1", "printer_id": "m1", "filament_id": "pla", "file_id": stored["id"],
            "print_weight_in_grams": 5})).status_code == 201

        async def settled() -> bool:
            found = (await api.get("/api/v1/dashboard/overview")).json()
            return bool(found["states"]["bed_to_clear"] == 1 and found["states"]["offline"] == 1
                        and found["states"]["idle"] == 1)

        await eventually(settled, 30, "m1's bed to clear, off1 offline, m2 idle")
        found = (await api.get("/api/v1/dashboard/overview")).json()
        assert found["printers"] == 4
        assert found["states"] == {"printing": 0, "paused": 0, "idle": 1, "bed_to_clear": 1,
                                   "finished": 0, "error": 0, "offline": 1, "unknown": 0,
                                   "not_driven": 1}
        assert found["needs_attention"] == 2  # off1 and m1; the shelf is not driven
        assert [(g["group"], g["printers"], g["states"]["offline"], g["states"]["not_driven"])
                for g in found["groups"]] == [("lab", 3, 1, 0), ("store", 1, 0, 1)]
        tiles = {t["id"]: (t["state"], t["attention"]) for t in found["tiles"]}
        assert tiles == {"m1": ("bed_to_clear", True), "m2": ("idle", False),
                         "off1": ("offline", True), "shelf": ("not_driven", False)}

        # Needs attention: off1 waits since it was added, m1 since its print ended; paged.
        assert await _ids(api, state="attention") == ["off1", "m1"]
        first = await api.get("/api/v1/dashboard/printers",
                              params={"state": "attention", "limit": 1})
        assert [c["id"] for c in first.json()] == ["off1"]
        assert first.json()[0]["waiting_since"] is not None
        rest = await _ids(api, state="attention", limit=1,
                          cursor=first.headers["X-Next-Cursor"])
        assert rest == ["m1"]
        assert await _ids(api, state="not_driven") == ["shelf"]
        assert await _ids(api, q="LAB") == ["m1", "m2", "off1"]  # by group, any case
        assert await _ids(api, q="spare") == ["shelf"]  # by model
        assert await _ids(api, q="_") == []  # a LIKE wildcard is a plain character

        # A running job is found by its file and its owner, by staff and by its owner only.
        alice = await make_user(api, "alice")
        bob = await make_user(api, "bob")
        job = await api.post("/api/v1/print_jobs", headers=alice,
                             data={"printer_id": "m2", "filament_id": "pla",
                                   "print_weight_in_grams": "5"},
                             files={"file": ("alice-keychain.gcode", GCODE)})
        assert job.status_code == 201, job.text

        async def running() -> bool:
            shown = (await api.get(f"/api/v1/print_jobs/{job.json()['id']}")).json()
            if shown["status"] == "Running" and shown["phase"] == "printing":
                await api.post(f"/api/v1/print_jobs/{job.json()['id']}/pause")
            return bool(shown["status"] == "Running" and shown["phase"] == "paused")

        await eventually(running, 30, "alice's job paused on m2")
        assert await _ids(api, q="keychain") == ["m2"]
        assert await _ids(api, q="alice") == ["m2"]
        assert await _ids(api, alice, q="keychain") == ["m2"]
        assert await _ids(api, bob, q="keychain") == []

        async def one_paused() -> bool:
            found = (await api.get("/api/v1/dashboard/overview")).json()
            return bool(found["states"]["paused"] == 1)

        await eventually(one_paused, 15, "the overview to count m2 paused")
