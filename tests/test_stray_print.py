"""The worker's safety net against late starts, driven tick by tick on a local state machine."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from mes.config import Settings
from mes.printers.base import PrinterStatus
from mes.state.machine import Outcome, StateMachine
from mes.workers.context import Fenced, WorkerContext
from mes.workers.printer_worker import PrinterWorker


class Writer:
    """Applies commands straight to the machine, as a one-node log would."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine

    async def submit(self, op: str, args: Mapping[str, Any], request_id: str | None = None,
                     remember: bool = True) -> Outcome:
        return self.machine.apply({"op": op, "args": dict(args), "rid": None,
                                   "ts": time.time()})


class Printing:
    """A printer that prints `name` and records cancels."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cancels = 0

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        return PrinterStatus(state="printing", file_name=self.name, progress=0.0)

    async def cancel(self) -> None:
        self.cancels += 1


def done_job_farm() -> tuple[StateMachine, int]:
    """Printer p1 whose job j is Done; returns the machine and the epoch that ran it."""
    machine = StateMachine()

    def do(op: str, **args: Any) -> Any:
        outcome = machine.apply({"op": op, "args": args, "rid": None, "ts": time.time()})
        assert outcome.ok, outcome.error
        return outcome.value

    do("filament.create", id="f1", type="PLA", color="red", total_weight_in_grams=1000)
    do("printer.create", id="p1", api="Mock", worker=True, filament_id="f1")
    do("file.register", id="c" * 64, name="a.gcode", size=10)
    do("job.create", id="j", filament_id="f1", file_id="c" * 64, print_weight_in_grams=5)
    epoch = int(do("leader.begin", leader="n1")["epoch"])
    do("job.claim", epoch=epoch, job_id="j", printer_id="p1", printer_filename="mes-j.gcode")
    do("job.started", epoch=epoch, job_id="j")
    do("job.finished", epoch=epoch, job_id="j")
    return machine, epoch


def worker(machine: StateMachine, epoch: int, client: Printing) -> PrinterWorker:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    node = SimpleNamespace(machine=machine, writer=Writer(machine), settings=settings)
    return PrinterWorker("p1", client, WorkerContext(node, epoch))  # type: ignore[arg-type]


def attention(machine: StateMachine) -> Any:
    return machine.read(lambda c: c.exec_driver_sql(
        "SELECT attention FROM printers WHERE id = 'p1'").scalar())


async def test_a_late_start_of_a_done_job_is_cancelled_on_the_first_tick() -> None:
    machine, epoch = done_job_farm()
    client = Printing("mes-j.gcode")
    await worker(machine, epoch, client).tick()
    assert client.cancels == 1
    assert "mes-j.gcode" in attention(machine)


async def test_a_deposed_leader_with_a_stale_view_never_cancels() -> None:
    machine, epoch = done_job_farm()
    machine.apply({"op": "leader.begin", "args": {"leader": "n2"}, "rid": None,
                   "ts": time.time()})
    client = Printing("mes-j.gcode")
    with pytest.raises(Fenced):
        await worker(machine, epoch, client).tick()
    assert client.cancels == 0
    assert attention(machine) is None
