"""RequestJobResponseByJobOrderState finds the job orders in the states asked for even when
newer jobs of the same status are in another ISA-95 state (Running against Interrupted
depends on the printer): the search reads page after page instead of filtering one page."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, insert

from mes.opcua import methods
from mes.state.tables import metadata, print_jobs, printer_status


def test_running_jobs_behind_a_page_of_interrupted_ones_are_found(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods, "RESPONSES_PER_CALL", 3)
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(printer_status), [
            {"printer_id": "paused", "state": "paused", "observed_at": 1.0},
            {"printer_id": "busy", "state": "printing", "observed_at": 1.0}])
        # Seven newer jobs on the paused printer (Interrupted), then two on the printing one.
        rows = [{"id": f"i{n}", "assigned_printer_id": "paused", "updated_at": 100.0 + n}
                for n in range(7)]
        rows += [{"id": f"r{n}", "assigned_printer_id": "busy", "updated_at": 10.0 + n}
                 for n in range(2)]
        conn.execute(insert(print_jobs), [
            {**row, "filepath": "x.gcode", "print_weight_in_grams": 1, "status": "Running",
             "from_server": True, "created_at": 1.0} for row in rows])
        running = methods._jobs_with_histories(conn, {"Running"}, None)
        interrupted = methods._jobs_with_histories(conn, {"Interrupted"}, None)
    assert [job["id"] for job, _, _ in running] == ["r1", "r0"]
    assert [job["id"] for job, _, _ in interrupted] == ["i6", "i5", "i4"]  # at most 3
