"""The job history a farm reads and hands on: search (`q`) by file, printer and owner, when
each job ended and started, and every matching job as CSV (a user's: only their own;
formula-like cells made inert)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.accounts import make_user
from tests.farm_helpers import GCODE, eventually, running_farm


async def _ids(api: httpx.AsyncClient, headers: dict[str, str] | None = None,
               **params: Any) -> list[str]:
    answer = await api.get("/api/v1/print_jobs", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return [job["id"] for job in answer.json()]


def _rows(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "print-jobs.csv" in answer.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(answer.text)))


async def test_history_search_times_and_csv(tmp_path: Path) -> None:
    async with running_farm(tmp_path, mock_printer_job_time=4) as (_, api):
        spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 500}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        printer = {"id": "mk4-7", "api": "Mock", "worker": True, "filament_id": "pla"}
        assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
        alice = await make_user(api, "alice", name="Alice Liddell")
        bob = await make_user(api, "bob")
        printed = await api.post("/api/v1/print_jobs", headers=alice,
                                 data={"id": "a-1", "filament_id": "pla",
                                       "print_weight_in_grams": "7"},
                                 files={"file": ("alice-keychain.gcode", GCODE)})
        assert printed.status_code == 201, printed.text
        # A record-only job (no file) whose name a spreadsheet would run as a formula.
        formula = await api.post("/api/v1/print_jobs", headers=bob, json={
            "id": "b-1", "filament_id": "pla", "filepath": "=HYPERLINK(\"x\")",
            "print_weight_in_grams": 3})
        assert formula.status_code == 201, formula.text
        assert (await api.post("/api/v1/print_jobs/b-1/status", headers=bob,
                               params={"status": "Canceled"})).status_code == 200

        async def done() -> bool:
            job = (await api.get("/api/v1/print_jobs/a-1")).json()
            return bool(job["status"] == "Done")

        await eventually(done, 30, "alice's job to be printed")

        # Search by file, by printer, by owner id or name; a user only among their own.
        assert await _ids(api, q="KEYCHAIN") == ["a-1"]
        assert await _ids(api, q="mk4-7") == ["a-1"]
        assert await _ids(api, q="liddell") == ["a-1"]
        assert await _ids(api, q="bob") == ["b-1"]
        assert await _ids(api, q="%") == []  # a LIKE wildcard is a plain character
        assert await _ids(api, bob, q="keychain") == []
        assert await _ids(api, alice, q="keychain") == ["a-1"]

        # When each ended, and when the printed one started.
        shown = {j["id"]: j for j in (await api.get("/api/v1/print_jobs")).json()}
        ended = shown["a-1"]["ended"]
        assert ended["kind"] == "done"
        started, at = (datetime.fromisoformat(ended[k]) for k in ("started_at", "at"))
        assert started <= at
        assert shown["b-1"]["ended"]["kind"] == "canceled"
        assert shown["b-1"]["ended"]["started_at"] is None  # it never printed
        assert shown["b-1"]["ended"]["at"] is not None

        rows = _rows(await api.get("/api/v1/print_jobs/export"))
        assert [r["id"] for r in rows] == ["b-1", "a-1"]  # the newest first
        by_id = {r["id"]: r for r in rows}
        assert by_id["a-1"]["file"] == "alice-keychain.gcode"
        assert (by_id["a-1"]["status"], by_id["a-1"]["outcome"]) == ("Done", "done")
        assert (by_id["a-1"]["owner"], by_id["a-1"]["printer"], by_id["a-1"]["grams"]) == (
            "alice", "mk4-7", "7")
        duration = float(by_id["a-1"]["duration_s"])
        assert abs(duration - (at - started).total_seconds()) <= 0.1
        assert by_id["b-1"]["file"] == "'=HYPERLINK(\"x\")"  # inert in a spreadsheet
        assert by_id["b-1"]["outcome_message"] == "Canceled by bob."
        assert (by_id["b-1"]["started_at"], by_id["b-1"]["duration_s"]) == ("", "")
        # Filters apply; a user's export holds only their own jobs.
        assert [r["id"] for r in _rows(await api.get(
            "/api/v1/print_jobs/export", params={"status": "Done"}))] == ["a-1"]
        assert [r["id"] for r in _rows(await api.get("/api/v1/print_jobs/export",
                                                     headers=bob))] == ["b-1"]
        assert [r["id"] for r in _rows(await api.get(
            "/api/v1/print_jobs/export", headers=bob, params={"owner_id": "alice"}))] == [
                "b-1"]
