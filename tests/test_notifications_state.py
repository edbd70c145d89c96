"""Deliveries derived inside apply: ids from the Raft index, notification types, printer
alerts once per stretch, and retries with backoff decided deterministically."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest
from sqlalchemy import select

from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from mes.state.tables import deliveries
from tests.shard_helpers import NODE, epoch_of

SECRET = "whsec_" + "A" * 32


@pytest.fixture
def machine() -> Iterator[StateMachine]:
    state = StateMachine()
    yield state
    state.close()


class Log:
    """Applies commands at increasing Raft indexes, as pysyncobj would."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        self.index = count(10)
        self.ts = 1000.0

    def __call__(self, op: str, **args: Any) -> Outcome:
        self.ts += 1
        outcome = self.machine.apply({"op": op, "args": args, "ts": self.ts}, next(self.index))
        assert outcome.ok, outcome.error
        return outcome


def place_printer(apply: Log, printer_id: str) -> int:
    """Create the printer if needed and place it on a node, as the leader does; its epoch."""
    if not apply.machine.read(lambda c: c.exec_driver_sql(
            "SELECT 1 FROM printers WHERE id = ?", (printer_id,)).first()):
        apply(Op.PRINTER_CREATE, id=printer_id, api="Mock", worker=True, filament_id="s")
    leader = apply(Op.LEADER_BEGIN, leader="me").value["epoch"]
    apply(Op.NODE_LEASE, node=NODE)
    apply(Op.SHARD_ASSIGN, leader_epoch=leader, now=apply.ts,
          moves=[{"printer_id": printer_id, "epoch": 0, "node": NODE}])
    return epoch_of(apply.machine, printer_id)


def rows(machine: StateMachine) -> list[dict[str, Any]]:
    return machine.read(lambda c: [dict(r._mapping) for r in c.execute(
        select(deliveries).order_by(deliveries.c.seq))])


def test_job_changes_become_typed_deliveries_with_ids_from_the_index(
        machine: StateMachine) -> None:
    apply = Log(machine)
    apply(Op.USER_CREATE, id="u1", name="Ada", role="user", email="ada@uni.test")
    apply(Op.FILAMENT_CREATE, id="s", type="PLA", color="red", total_weight_in_grams=100)
    apply(Op.WEBHOOK_CREATE, id="w", url="http://127.0.0.1:9/h", secret=SECRET, types=["*"])
    created = apply(Op.JOB_CREATE, id="j1", filament_id="s", filepath="a.gcode",
                    print_weight_in_grams=1, owner_id="u1")
    apply(Op.JOB_SET_STATUS, id="j1", status="Running")
    apply(Op.JOB_SET_STATUS, id="j1", status="Done")
    found = rows(machine)
    assert [(r["kind"], r["type"]) for r in found] == [
        # notification types, not ops, though "job.started" is spelled like one
        ("webhook", "job.created"),
        ("webhook", "job.started"),  # wire format
        ("webhook", "job.done"), ("email", "job.done")]
    assert found[0]["id"] == f"msg_{created.index}_0"
    assert found[-1]["id"].endswith("_1") and found[-1]["target"] == "ada@uni.test"
    assert all(r["status"] == "pending" and r["next_at"] == r["created_at"] for r in found)


def test_a_lost_print_is_failed_a_users_cancel_is_canceled(machine: StateMachine) -> None:
    apply = Log(machine)
    apply(Op.FILAMENT_CREATE, id="s", type="PLA", color="red", total_weight_in_grams=100)
    apply(Op.WEBHOOK_CREATE, id="w", url="http://127.0.0.1:9/h", secret=SECRET,
          types=["job.failed", "job.canceled"])
    epoch = place_printer(apply, "p")
    apply(Op.FILE_REGISTER, id="c" * 64, name="a.gcode", size=10)
    apply(Op.JOB_CREATE, id="lost", filament_id="s", file_id="c" * 64, printer_id="p",
          print_weight_in_grams=1)
    apply(Op.JOB_CLAIM, epoch=epoch, job_id="lost", printer_id="p",
          printer_filename="mes-lost.gcode")
    apply(Op.JOB_STARTED, epoch=epoch, job_id="lost", printer_id="p")
    apply(Op.JOB_CREATE, id="canceled", filament_id="s", filepath="a.gcode",
          print_weight_in_grams=1)
    apply(Op.JOB_SET_STATUS, id="canceled", status="Running")
    apply(Op.JOB_LOST, epoch=epoch, job_id="lost", printer_id="p", cause="printer restarted")
    apply(Op.JOB_SET_STATUS, id="canceled", status="Canceled")
    assert [r["type"] for r in rows(machine)] == ["job.failed", "job.canceled"]


def test_a_printer_error_notifies_once_per_stretch(machine: StateMachine) -> None:
    apply = Log(machine)
    apply(Op.PRINTER_CREATE, id="p")
    apply(Op.WEBHOOK_CREATE, id="w", url="http://127.0.0.1:9/h", secret=SECRET,
          types=["printer.error"], printer_ids=["p"])
    epoch = place_printer(apply, "p")
    for state in ("idle", "error", "error", "idle", "error"):
        apply(Op.PRINTER_TELEMETRY, statuses=[
            {"printer_id": "p", "epoch": epoch, "state": state, "observed_at": apply.ts}])
    assert [r["type"] for r in rows(machine)] == ["printer.error", "printer.error"]


def test_results_retry_with_backoff_then_fail(machine: StateMachine) -> None:
    apply = Log(machine)
    apply(Op.FILAMENT_CREATE, id="s", type="PLA", color="red", total_weight_in_grams=100)
    apply(Op.WEBHOOK_CREATE, id="w", url="http://127.0.0.1:9/h", secret=SECRET, types=["*"])
    apply(Op.JOB_CREATE, id="j", filament_id="s", filepath="a.gcode", print_weight_in_grams=1)
    (row,) = rows(machine)
    policy = {"retry_base": 10.0, "retry_cap": 25.0, "max_age": 100.0}
    start = row["created_at"]
    next_at = []
    for attempt_at in (start, start + 10, start + 30, start + 55):
        apply(Op.DELIVERY_RESULT, results=[{"id": row["id"], "result": "error", "at": attempt_at,
                                           "status_code": 500, "error": "HTTP 500"}], **policy)
        next_at.append(rows(machine)[0]["next_at"] - attempt_at)
    assert next_at == [10.0, 20.0, 25.0, 25.0]  # doubling, capped
    apply(Op.DELIVERY_RESULT, results=[{"id": row["id"], "result": "error",
                                       "at": start + 80}], **policy)
    final = rows(machine)[0]
    assert final["status"] == "failed" and final["attempts"] == 5
    # a late success from a deposed leader changes nothing
    apply(Op.DELIVERY_RESULT, results=[{"id": row["id"], "result": "ok", "at": start + 81}],
          **policy)
    assert rows(machine)[0]["status"] == "failed"


def test_a_snapshot_from_before_notifications_gets_their_tables(machine: StateMachine) -> None:
    import sqlite3

    apply = Log(machine)
    apply(Op.FILAMENT_CREATE, id="s", type="PLA", color="red", total_weight_in_grams=100)
    source = sqlite3.connect(":memory:")
    source.deserialize(machine.snapshot())
    for table in ("webhooks", "deliveries", "printer_alerts"):
        source.execute(f"DROP TABLE {table}")
    source.execute("PRAGMA user_version = 0")  # as every image before release 0.2.0
    source.commit()
    machine.restore(source.serialize())
    apply(Op.JOB_CREATE, id="j", filament_id="s", filepath="a.gcode", print_weight_in_grams=1)
    apply(Op.WEBHOOK_CREATE, id="w", url="http://127.0.0.1:9/h", secret=SECRET, types=["*"])
    apply(Op.JOB_SET_STATUS, id="j", status="Canceled")
    assert [r["type"] for r in rows(machine)] == ["job.canceled"]
