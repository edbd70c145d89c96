"""A printer's MachineryItemState is derived as its utilisation state is, in Python for the
live value and in SQL for the state stretches its history is read from: the two agree."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import create_engine, insert, select

from mes.opcua.item_states import ITEM_STATE_OF, item_state, utilization_state
from mes.state.intervals import UTILIZATION_STATES, state_expression
from mes.state.tables import metadata, printer_status, printers

REPORTED = (None, "idle", "printing", "paused", "finished", "error", "offline", "cancelling")


def test_python_and_sql_count_every_state_alike() -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    cases = list(itertools.product(REPORTED, (False, True)))
    with engine.begin() as conn:
        for n, (reported, attention) in enumerate(cases):
            pid = f"p{n}"
            conn.execute(insert(printers).values(
                id=pid, api="Mock", url="mock://x", worker=True, created_at=0.0, updated_at=0.0,
                attention="held" if attention else None))
            if reported is not None:
                conn.execute(insert(printer_status).values(
                    printer_id=pid, state=reported, observed_at=0.0))
        query = (select(printers.c.id, state_expression().label("state"))
                 .select_from(printers.outerjoin(
                     printer_status, printer_status.c.printer_id == printers.c.id)))
        by_sql = {row.id: row.state for row in conn.execute(query)}
    for n, (reported, attention) in enumerate(cases):
        assert utilization_state(reported, attention) == by_sql[f"p{n}"], (reported, attention)


@pytest.mark.parametrize(("reported", "attention", "expected"), [
    (None, False, "NotAvailable"), ("offline", False, "NotAvailable"),
    ("printing", False, "Executing"), ("printing", True, "Executing"),
    ("paused", True, "NotExecuting"), ("idle", False, "NotExecuting"),
    ("finished", False, "NotExecuting"), ("idle", True, "OutOfService"),
    ("error", False, "OutOfService")])
def test_machinery_item_states(reported: str | None, attention: bool, expected: str) -> None:
    assert item_state(reported, attention) == expected
    assert set(ITEM_STATE_OF) == set(UTILIZATION_STATES)
