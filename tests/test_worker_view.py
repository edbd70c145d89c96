"""The workers' shared farm view: read again after a command changed the farm, not after
telemetry (which changes neither printers nor jobs), never more than twice an interval; and
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
