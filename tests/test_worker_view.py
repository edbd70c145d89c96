"""The workers' shared farm view: read again after a command changed the farm, not after
telemetry (which changes neither printers nor jobs), never more than twice an interval; a
command of this node about one printer reads that printer again alone, at once; and
workers that tick at their own points of the interval."""

from __future__ import annotations

import time

from mes.node import FarmNode
from mes.state.ops import Op
from mes.workers.context import VIEW_MAX_AGE, WorkerContext
from tests.shard_helpers import do, place


def _age(ctx: WorkerContext, seconds: float) -> None:
    """Make the cached view `seconds` older (instead of waiting)."""
    assert ctx._view is not None
    ctx._view.read_at -= seconds


async def test_view_is_read_again_only_when_the_farm_changed(node: FarmNode) -> None:
    ctx = WorkerContext(node)
    first = ctx.view()
    assert first.printers == {}
    _age(ctx, 0.6)  # past half an interval (1 s), no command since: the same view
    assert ctx.view() is first

    telemetry = node.machine.apply({"op": Op.PRINTER_TELEMETRY, "args": {"statuses": []},
                                    "ts": time.time()})
    assert telemetry.error is None, telemetry.error
    assert ctx.view() is first  # telemetry writes printer status rows only
    do(node.machine, Op.NODE_LEASE, node=node.self_address)
    assert ctx.view() is first  # nor does a lease renewal (every node, every few seconds)

    me = node.self_address
    do(node.machine, Op.PRINTER_CREATE, id="p1", api="Mock", url="http://mock-1", worker=True)
    place(node.machine, "p1", me)
    second = ctx.view()
    assert second is not first and set(second.printers) == {"p1"}

    do(node.machine, Op.PRINTER_CREATE, id="p2", api="Mock", url="http://mock-2", worker=True)
    place(node.machine, "p2", me)
    assert ctx.view() is second  # changed, but read less than half an interval ago
    _age(ctx, 0.6)
    second = ctx.view()
    assert set(second.printers) == {"p1", "p2"}  # only the printers this node drives

    _age(ctx, VIEW_MAX_AGE)  # nothing changed, but read long ago: read again all the same
    assert ctx.view() is not second


def test_workers_tick_at_points_spread_over_the_interval() -> None:
    from mes.workers.printer_worker import phase

    phases = [phase(f"p{i}") for i in range(1000)]
    assert all(0.0 <= p < 1.0 for p in phases)
    assert phase("p1") == phase("p1")  # fixed per printer
    tenths = [sum(1 for p in phases if k / 10 <= p < (k + 1) / 10) for k in range(10)]
    assert min(tenths) > 60 and max(tenths) < 140, tenths  # no burst of all at once


async def test_may_act_follows_every_applied_assignment_and_a_snapshot(node: FarmNode) -> None:
    ctx = WorkerContext(node)
    me = node.self_address
    do(node.machine, Op.PRINTER_CREATE, id="p1", api="Mock", url="http://mock-1", worker=True)
    assert not ctx.may_act("p1", 0)  # driven by nobody yet
    epoch = place(node.machine, "p1", me)
    assert ctx.may_act("p1", epoch)  # read again: the assignment was applied since
    reads = ctx._epochs_at
    telemetry = node.machine.apply({"op": Op.PRINTER_TELEMETRY, "args": {"statuses": []},
                                    "ts": time.time()})
    assert telemetry.error is None
    assert ctx.may_act("p1", epoch) and ctx._epochs_at is reads  # telemetry: no read
    image = node.machine.snapshot()

    moved = place(node.machine, "p1", "127.0.0.1:1")  # handed to another node
    assert moved != epoch
    assert not ctx.may_act("p1", epoch) and not ctx.may_act("p1", moved)

    node.machine.restore(image)  # a snapshot from before the move: p1 is this node's again
    assert ctx.may_act("p1", epoch)


FILE = "c" * 64


def _farm_of_three(node: FarmNode) -> None:
    """Three printers driven by this node, each with its own spool, and a file."""
    do(node.machine, Op.FILE_REGISTER, id=FILE, name="a.gcode", size=10)
    for n in range(3):
        do(node.machine, Op.FILAMENT_CREATE, id=f"s{n}", type="PLA", color="red",
           total_weight_in_grams=1000)
        do(node.machine, Op.PRINTER_CREATE, id=f"p{n}", api="Mock", worker=True,
           filament_id=f"s{n}")
        place(node.machine, f"p{n}", node.self_address)


async def test_a_command_about_one_printer_reads_that_printer_again_alone(
        node: FarmNode) -> None:
    _farm_of_three(node)
    ctx = WorkerContext(node)
    first = ctx.view()
    assert sorted(first.printers) == ["p0", "p1", "p2"] and first.active_jobs == {}
    assert (ctx.view_reads, ctx.view_patches) == (1, 0)
    epochs = {p: first.printers[p]["drive_epoch"] for p in first.printers}
    for n in (1, 2):
        do(node.machine, Op.JOB_CREATE, id=f"j{n}", filament_id=f"s{n}", file_id=FILE,
           print_weight_in_grams=5)
    # This node claims j1 for p1: its view shows the claim at once, read for p1 alone.
    claimed = await ctx.command(Op.JOB_CLAIM, for_printer="p1", job_id="j1", printer_id="p1",
                                epoch=epochs["p1"], printer_filename="mes-j1.gcode")
    assert claimed is not None
    seen = ctx.view()
    assert seen.active_jobs["p1"]["id"] == "j1"
    assert (ctx.view_reads, ctx.view_patches) == (1, 1)
    assert seen.read_at == first.read_at and seen.version == first.version
    # j2 claimed by a command that is not this node's: the view shows it once the whole
    # view is read again (the farm version moved, half a worker interval after the read).
    do(node.machine, Op.JOB_CLAIM, job_id="j2", printer_id="p2", epoch=epochs["p2"],
       printer_filename="mes-j2.gcode")
    assert "p2" not in ctx.view().active_jobs
    _age(ctx, 0.6)
    later = ctx.view()
    assert later.active_jobs["p2"]["id"] == "j2" and later.active_jobs["p1"]["id"] == "j1"
    assert ctx.view_reads == 2
    # A command about no one printer forgets the whole view.
    ctx.invalidate()
    ctx.view()
    assert ctx.view_reads == 3


async def test_a_printer_no_longer_driven_here_leaves_the_view_when_read_again(
        node: FarmNode) -> None:
    _farm_of_three(node)
    ctx = WorkerContext(node)
    assert "p0" in ctx.view().printers
    do(node.machine, Op.PRINTER_DELETE, id="p0")
    ctx.invalidate("p0")
    assert "p0" not in ctx.view().printers and ctx.view_reads == 1
