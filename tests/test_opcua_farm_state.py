"""What the address space reads of the state: the finished job shown on an uncleared bed."""

from __future__ import annotations

from sqlalchemy import create_engine, insert

from mes.opcua.farm_state import _finished_on_bed, read_statuses
from mes.state.tables import metadata, print_jobs, printer_status


def _job(job_id: str, printer: str, status: str, at: float) -> dict[str, object]:
    return {"id": job_id, "filepath": "x.gcode", "print_weight_in_grams": 1, "status": status,
            "assigned_printer_id": printer, "created_at": at, "updated_at": at}


def test_the_newest_done_job_of_each_waiting_printer_in_one_query() -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(print_jobs), [
            _job("a-old", "a", "Done", 1.0), _job("a-new", "a", "Done", 5.0),
            _job("a-canceled", "a", "Canceled", 9.0),
            _job("b-1", "b", "Done", 3.0), _job("c-1", "c", "Done", 4.0),
            _job("d-1", "d", "Done", 4.0)])
        rows = [{"id": "a", "bed_clear": False}, {"id": "b", "bed_clear": False},
                {"id": "c", "bed_clear": True}, {"id": "d", "bed_clear": False},
                {"id": "e", "bed_clear": False}]
        found = _finished_on_bed(conn, rows, {"d": {"id": "d-active"}})
    # a: its newest Done job; b: its only one; c: bed cleared; d: has an active job;
    # e: never finished anything.
    assert {pid: job["id"] for pid, job in found.items()} == {"a": "a-new", "b": "b-1"}
    assert found["a"]["status"] == "Done" and found["a"]["updated_at"] == 5.0


def test_read_statuses_leaves_out_printers_without_one() -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(printer_status), [{"printer_id": "a", "state": "printing",
                                               "observed_at": 1.0}])
        found = read_statuses(conn, ["a", "b"])
    assert list(found) == ["a"] and found["a"]["state"] == "printing"
