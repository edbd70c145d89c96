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
from mes.state.ops import Op
from mes.workers.context import Fenced, WorkerContext
from mes.workers.printer_worker import PrinterWorker
from tests.shard_helpers import NODE, OTHER, place


class Writer:
    """Applies commands straight to the machine, as a one-node log would."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine

    async def submit(self, op: str, args: Mapping[str, Any], request_id: str | None = None,
                     remember: bool = True) -> Outcome:
        return self.machine.apply({"op": op, "args": dict(args), "rid": None,
                                   "ts": time.time()})


class Printing:
    """A printer that prints `name` (idle without one) and records what it is asked."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.cancels = 0
        self.uploads: list[str] = []
        self.starts: list[str] = []

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        if self.name is None:
            return PrinterStatus(state="idle")
        return PrinterStatus(state="printing", file_name=self.name, progress=0.0)

    async def cancel(self) -> None:
        self.cancels += 1

    async def upload(self, name: str, data: bytes) -> None:
        self.uploads.append(name)

    async def start(self, name: str) -> None:
        self.starts.append(name)


def done_job_farm(until: str | None = None) -> tuple[StateMachine, int]:
    """Printer p1 whose job j is Done (or stopped before `until`); returns the machine and
    the epoch that ran it."""
    machine = StateMachine()

    def do(op: str, **args: Any) -> Any:
        outcome = machine.apply({"op": op, "args": args, "rid": None, "ts": time.time()})
        assert outcome.ok, outcome.error
        return outcome.value

    do(Op.FILAMENT_CREATE, id="f1", type="PLA", color="red", total_weight_in_grams=1000)
    do(Op.PRINTER_CREATE, id="p1", api="Mock", worker=True, filament_id="f1")
    do(Op.FILE_REGISTER, id="c" * 64, name="a.gcode", size=10)
    do(Op.JOB_CREATE, id="j", filament_id="f1", file_id="c" * 64, print_weight_in_grams=5)
    epoch = place(machine, "p1")
    for op, args in ((Op.JOB_CLAIM, {"printer_filename": "mes-j.gcode"}),
                     (Op.JOB_STARTED, {}), (Op.JOB_FINISHED, {})):
        if op == until:
            break
        do(op, epoch=epoch, job_id="j", printer_id="p1", **args)
    return machine, epoch


def worker(machine: StateMachine, epoch: int, client: Printing) -> PrinterWorker:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    async def blob(file_id: str) -> bytes:
        return b"G28\n"

    writer = Writer(machine)
    node = _Node(read_now=machine.read, submit=writer.submit, settings=settings,
                 blob=blob, self_address=NODE, machine=machine)
    ctx = WorkerContext(node, claimed={"j"})  # claimed here
    return PrinterWorker("p1", client, ctx, epoch)  # type: ignore[arg-type]


class _Node(SimpleNamespace):
    """The node as a worker sees it (mes.workers.ports.FarmPort), over a bare machine."""

    @property
    def farm_version(self) -> int:
        version: int = self.machine.farm_version
        return version


def attention(machine: StateMachine) -> Any:
    return machine.read(lambda c: c.exec_driver_sql(
        "SELECT attention FROM printers WHERE id = 'p1'").scalar())


def job_row(machine: StateMachine, columns: str) -> tuple[Any, ...]:
    row = machine.read(lambda c: c.exec_driver_sql(
        f"SELECT {columns} FROM print_jobs WHERE id = 'j'").first())
    assert row is not None
    return tuple(row)


async def test_a_late_start_of_a_done_job_is_cancelled_on_the_first_tick() -> None:
    machine, epoch = done_job_farm()
    client = Printing("mes-j.gcode")
    await worker(machine, epoch, client).tick()
    assert client.cancels == 1
    assert "mes-j.gcode" in attention(machine)


async def test_a_node_that_lost_the_printer_never_cancels() -> None:
    machine, epoch = done_job_farm()
    place(machine, "p1", OTHER)
    client = Printing("mes-j.gcode")
    with pytest.raises(Fenced):
        await worker(machine, epoch, client).tick()
    assert client.cancels == 0
    assert attention(machine) is None


async def test_a_node_that_lost_the_printer_sends_no_start() -> None:
    machine, epoch = done_job_farm(until=Op.JOB_STARTED)  # claimed, starting
    client = Printing(None)
    current = worker(machine, epoch, client)
    place(machine, "p1", OTHER)
    with pytest.raises(Fenced):
        await current.tick()
    assert client.starts == []


async def test_the_driving_node_uploads_then_starts() -> None:
    machine, epoch = done_job_farm(until=Op.JOB_STARTED)
    client = Printing(None)
    await worker(machine, epoch, client).tick()
    assert (client.uploads, client.starts) == (["mes-j.gcode"], ["mes-j.gcode"])


class Busy(Printing):
    """Idle in its first status, but the start is refused: an earlier start just began."""

    async def start(self, name: str) -> None:
        from mes.printers.base import PrinterBusy

        self.starts.append(name)
        self.name = name  # the inherited start that arrived a moment before
        raise PrinterBusy("409 Printer is busy")


async def test_a_start_refused_as_busy_waits_for_the_printer_instead_of_requeueing() -> None:
    machine, epoch = done_job_farm(until=Op.JOB_STARTED)
    client = Busy(None)
    current = worker(machine, epoch, client)
    await current.tick()  # refused: busy
    assert job_row(machine, "status, phase") == ("Queued", "starting")
    current.ctx.invalidate()
    await current.tick()  # the printer shows our file: started, never queued again
    assert job_row(machine, "status, last_error") == ("Running", None)
    assert client.starts == ["mes-j.gcode"]
