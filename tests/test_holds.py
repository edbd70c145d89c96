"""Every reason a job waits, as a code and a sentence."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mes.state.holds import FarmView, hold_of

JOB = {"id": "j", "status": "Queued", "file_id": "f" * 64, "filament_id": "pla",
       "printer_id": None, "assigned_printer_id": None, "last_error": None, "phase": None,
       "requested_action": None}
PRINTER = {"id": "p1", "worker": True, "filament_id": "pla", "bed_clear": True,
           "attention": None, "reserved_by": None, "reserved_until": None, "url": "http://x",
           "api": "OctoPrint"}
IDLE = {"state": "idle", "error": None}


def view(printer: dict[str, Any] | None = None, status: dict[str, Any] | None = IDLE,
         busy: str | None = None) -> FarmView:
    printer = {**PRINTER, **(printer or {})}
    return FarmView({printer["id"]: printer}, {printer["id"]: status} if status else {},
                    {printer["id"]: busy} if busy else {}, now=1000.0)


@pytest.mark.parametrize(("job", "farm", "code"), [
    ({}, view(), None),
    ({"file_id": None}, view(), "record_only"),
    ({"filament_id": "petg"}, view(), "no_printer_for_spool"),
    ({}, view({"worker": False}), "no_driven_printer"),
    ({"printer_id": "p1"}, view({"worker": False}), "printer_not_driven"),
    ({"printer_id": "nope"}, view(), "printer_not_found"),
    ({}, view({"bed_clear": False}), "bed_not_cleared"),
    ({}, view({"attention": "a stray print was cancelled", "bed_clear": False}),
     "printer_needs_attention"),
    ({}, view({"reserved_by": "robot", "reserved_until": 1060.0}), "printer_reserved"),
    ({}, view({"reserved_by": "robot", "reserved_until": 900.0}), None),
    ({}, view(status={"state": "offline", "error": "connection refused"}), "printer_offline"),
    ({}, view(status={"state": "offline", "error": "HTTP 403: invalid API key"}),
     "printer_refuses_key"),
    ({}, view(status={"state": "error", "error": "thermal runaway"}), "printer_error"),
    ({}, view(busy="other"), "printer_busy"),
    ({}, view(status=None), "printer_not_seen"),
    ({"last_error": "timeout"}, view(), "last_start_failed"),
    ({"assigned_printer_id": "p1"}, view(), "starting"),
    ({"status": "Running", "phase": "paused"}, view(), "paused"),
    ({"status": "Running"}, view(), None),
    ({"status": "Done", "file_id": None}, view(), None),
])
def test_hold_codes(job: dict[str, Any], farm: FarmView, code: str | None) -> None:
    hold = hold_of({**JOB, **job}, farm)
    assert (hold.code if hold else None) == code
    if hold:
        assert hold.message and "None" not in hold.message


def test_the_offline_reason_names_the_printers_error() -> None:
    hold = hold_of(JOB, view(status={"state": "offline", "error": "connection refused"}))
    assert hold is not None and "connection refused" in hold.message and "p1" in hold.message


async def test_the_api_shows_why_a_job_waits(api: httpx.AsyncClient) -> None:
    spool = {"id": "pla", "type": "PLA", "color": "black", "total_weight_in_grams": 1000}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    record = await api.post("/api/v1/print_jobs", json={
        "id": "r", "filament_id": "pla", "filepath": "a.gcode", "print_weight_in_grams": 5})
    assert record.json()["hold"]["code"] == "record_only"
    assert record.json()["hold_reason"] == record.json()["hold"]["message"]
    upload = await api.post("/api/v1/files", files={"file": ("a.gcode", b"G28\n")})
    body = {"filament_id": "pla", "file_id": upload.json()["id"], "print_weight_in_grams": 5}
    nobody = await api.post("/api/v1/print_jobs", json={**body, "id": "n"})
    assert nobody.json()["hold"]["code"] == "no_printer_for_spool"
    await api.post("/api/v1/printers", json={"id": "rec", "filament_id": "pla",
                                             "worker": False})
    pinned = await api.post("/api/v1/print_jobs", json={**body, "id": "p", "printer_id": "rec"})
    assert pinned.json()["hold"]["code"] == "printer_not_driven"
    listed = {j["id"]: j["hold"]["code"] for j in (await api.get("/api/v1/print_jobs")).json()}
    assert listed == {"r": "record_only", "n": "no_driven_printer", "p": "printer_not_driven"}
    one = await api.get("/api/v1/print_jobs/p")
    assert one.json()["hold"]["code"] == "printer_not_driven"
