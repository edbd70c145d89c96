"""The workers' shared view of their printers (mes/workers/context.py): a command of this
node about one printer reads that printer again alone, at once; anything else changed is
read again with the whole view, as before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from mes.workers.context import WorkerContext
from tests.shard_helpers import NODE, do, place

FILE = "c" * 64


class Port:
    """What WorkerContext needs of a node, over a state machine applied in this thread."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        self.self_address = NODE
        self.settings = SimpleNamespace(printers=SimpleNamespace(worker_interval=1.0))

    @property
    def farm_version(self) -> int:
        return self.machine.farm_version

    def read_now(self, query: Any) -> Any:
        return self.machine.read(query)

    async def submit(self, op: str, args: dict[str, Any], remember: bool = True) -> Outcome:
        return self.machine.apply({"op": op, "args": args, "rid": None, "ts": time.time()})


@pytest.fixture
def machine() -> Iterator[StateMachine]:
    machine = StateMachine()
    do(machine, Op.FILE_REGISTER, id=FILE, name="a.gcode", size=10)
    for n in range(3):
        do(machine, Op.FILAMENT_CREATE, id=f"s{n}", type="PLA", color="red",
           total_weight_in_grams=1000)
        do(machine, Op.PRINTER_CREATE, id=f"p{n}", api="Mock", worker=True, filament_id=f"s{n}")
        place(machine, f"p{n}")
    yield machine
    machine.close()


async def test_a_command_about_one_printer_reads_that_printer_again_alone(
        machine: StateMachine) -> None:
    ctx = WorkerContext(Port(machine))  # type: ignore[arg-type]
    first = ctx.view()
    assert sorted(first.printers) == ["p0", "p1", "p2"] and first.active_jobs == {}
    assert (ctx.view_reads, ctx.view_patches) == (1, 0)
    epochs = {p: first.printers[p]["drive_epoch"] for p in first.printers}
    for n in (1, 2):
        do(machine, Op.JOB_CREATE, id=f"j{n}", filament_id=f"s{n}", file_id=FILE,
           print_weight_in_grams=5)
    # This node claims j1 for p1: its view shows the claim at once, read for p1 alone.
    claimed = await ctx.command(Op.JOB_CLAIM, for_printer="p1", job_id="j1", printer_id="p1",
                                epoch=epochs["p1"], printer_filename="mes-j1.gcode")
    assert claimed is not None
    seen = ctx.view()
    assert seen.active_jobs["p1"]["id"] == "j1"
    assert (ctx.view_reads, ctx.view_patches) == (1, 1)
    assert seen.read_at == first.read_at and seen.version == first.version
    # j2 claimed by another's command (not this node's): the view shows it once the whole
    # view is read again (the farm version moved, half a worker interval after the read).
    do(machine, Op.JOB_CLAIM, job_id="j2", printer_id="p2", epoch=epochs["p2"],
       printer_filename="mes-j2.gcode")
    assert "p2" not in ctx.view().active_jobs
    ctx._view = ctx.view().__class__(seen.printers, seen.active_jobs, seen.read_at - 1.0,
                                     seen.version)  # half an interval later
    later = ctx.view()
    assert later.active_jobs["p2"]["id"] == "j2" and later.active_jobs["p1"]["id"] == "j1"
    assert ctx.view_reads == 2
    # A command about no one printer forgets the whole view.
    ctx.invalidate()
    ctx.view()
    assert ctx.view_reads == 3


async def test_a_printer_no_longer_driven_here_leaves_the_view_when_read_again(
        machine: StateMachine) -> None:
    ctx = WorkerContext(Port(machine))  # type: ignore[arg-type]
    assert "p0" in ctx.view().printers
    do(machine, Op.PRINTER_DELETE, id="p0")
    ctx.invalidate("p0")
    assert "p0" not in ctx.view().printers and ctx.view_reads == 1
