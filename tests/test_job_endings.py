"""Why every job ended, in words: printed, rejected with the operator's reason, canceled by
whom, or lost by the farm with what happened; never a plain "Canceled" for all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mes.state.job_endings import ending
from mes.state.ops import Op
from tests.accounts import make_user
from tests.farm_helpers import eventually, running_farm, upload


def _words(ended: dict[str, Any] | None) -> dict[str, Any] | None:
    """How a job ended, without when (`at`, `started_at`)."""
    if ended is None:
        return None
    return {k: v for k, v in ended.items() if k not in ("at", "started_at")}


def test_each_kind_of_ending_in_words() -> None:
    assert ending("Done", "printer finished", None) == {
        "kind": "done", "message": "Printed.", "by": None}
    assert ending("Canceled", "rejected: too big for the bed", "otto") == {
        "kind": "rejected", "message": "Rejected by otto: too big for the bed", "by": "otto"}
    assert ending("Canceled", "print lost: printer error: Klipper is in state 'shutdown'",
                  None)["message"] == (
        "Lost by the farm: printer error: Klipper is in state 'shutdown'")
    assert ending("Canceled", "api", "ada")["message"] == "Canceled by ada."
    assert ending("Canceled", "order canceled", None)["message"] == (
        "Canceled by the farm: order canceled.")
    assert ending("Canceled", None, None)["message"] == "Canceled."  # history pruned


async def test_the_api_says_how_each_job_ended(tmp_path: Path) -> None:
    async with running_farm(tmp_path, require_approval=True, mock_printer_job_time=1) as (
            _, api):
        spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 500}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        assert (await api.post("/api/v1/printers", json={
            "id": "m1", "api": "Mock", "worker": True, "filament_id": "pla"})).status_code == 201
        ada = await make_user(api, "ada")
        stored = (await api.post("/api/v1/files", headers=ada,
                                 files={"file": ("part.gcode", b"G28\n")})).json()
        for job_id in ("printed", "refused", "dropped"):
            created = await api.post("/api/v1/print_jobs", headers=ada, json={
                "id": job_id, "filament_id": "pla", "file_id": stored["id"],
                "print_weight_in_grams": 5})
            assert created.status_code == 201, created.text
            assert created.json()["ended"] is None
        assert (await api.post("/api/v1/print_jobs/refused/reject",
                               json={"reason": "too big for the bed"})).status_code == 200
        assert (await api.post("/api/v1/print_jobs/dropped/status", headers=ada,
                               params={"status": "Canceled"})).status_code == 200
        assert (await api.post("/api/v1/print_jobs/printed/approve")).status_code == 200

        async def printed() -> bool:
            job = (await api.get("/api/v1/print_jobs/printed")).json()
            return bool(job["status"] == "Done")

        await eventually(printed, 30, "the approved job to print")
        listed = (await api.get("/api/v1/print_jobs")).json()
        assert all(j["ended"]["at"] is not None for j in listed if j["ended"])
        jobs = {j["id"]: _words(j["ended"]) for j in listed}
        assert jobs["printed"] == {"kind": "done", "message": "Printed.", "by": None}
        assert jobs["refused"] == {"kind": "rejected", "by": "admin",
                                   "message": "Rejected by admin: too big for the bed"}
        assert jobs["dropped"] == {"kind": "canceled", "message": "Canceled by ada.",
                                   "by": "ada"}
        one = (await api.get("/api/v1/print_jobs/refused")).json()
        assert one["ended"]["kind"] == "rejected"


async def test_a_lost_print_says_what_happened(tmp_path: Path) -> None:
    async with running_farm(tmp_path, mock_printer_job_time=60) as (node, api):
        spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 500}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        assert (await api.post("/api/v1/printers", json={
            "id": "m1", "api": "Mock", "worker": True, "filament_id": "pla"})).status_code == 201
        stored = await upload(api)
        assert (await api.post("/api/v1/print_jobs", json={
            "id": "j", "filament_id": "pla", "file_id": stored["id"],
            "print_weight_in_grams": 5})).status_code == 201

        async def running() -> bool:
            return bool((await api.get("/api/v1/print_jobs/j")).json()["phase"] == "printing")

        await eventually(running, 20, "the job to print")
        # The farm loses it, as a worker reports a print its printer no longer has.
        epoch = await node.read(lambda c: c.exec_driver_sql(
            "SELECT claim_epoch FROM print_jobs WHERE id = 'j'").scalar())
        outcome = await node.submit(Op.JOB_LOST, {
            "epoch": epoch, "job_id": "j", "printer_id": "m1",
            "cause": "the printer no longer prints it (canceled at the printer, or restarted)"})
        assert outcome.ok, outcome.error
        job = (await api.get("/api/v1/print_jobs/j")).json()
        assert job["status"] == "Canceled"
        assert _words(job["ended"]) == {"kind": "lost", "by": None, "message": (
            "Lost by the farm: the printer no longer prints it (canceled at the printer, "
            "or restarted)")}
