"""Telemetry: one command per tick, only for printers whose status moved beyond the deadband."""

from __future__ import annotations

import math
from typing import Any

from mes.printers.base import PrinterStatus
from mes.state.ops import Op
from mes.workers.context import WorkerContext
from mes.workers.telemetry import TelemetryFlusher, changed


def test_deadband() -> None:
    base = PrinterStatus(state="printing", nozzle_actual=210.0, bed_actual=60.0,
                         progress=10.0, file_name="a.gcode").as_dict()
    assert changed(None, base)
    assert not changed(base, {**base, "nozzle_actual": 210.4, "progress": 10.5})
    assert changed(base, {**base, "nozzle_actual": 211.2})
    assert changed(base, {**base, "progress": 11.0})
    assert changed(base, {**base, "state": "paused"})
    assert changed(base, {**base, "error": "thermal runaway"})
    assert changed(base, {**base, "progress": None})


class FakeContext:
    """Stands in for WorkerContext.command: records the commands a flush submits."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.epochs = {f"p{i}": 7 for i in range(3)} | {"p": 7}
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def command(self, op: str, **args: Any) -> dict[str, Any]:
        self.sent.append((op, args))
        assert all(s["epoch"] == 7 for s in args["statuses"])
        return {"written": len(args["statuses"]), "stale": []}

    def saw(self, printer_id: str, status: PrinterStatus) -> None:
        from mes.workers.context import Seen

        self.seen[printer_id] = Seen(status, 1000.0)


async def test_one_batched_command_per_flush_and_nothing_when_unchanged() -> None:
    ctx = FakeContext()
    flusher = TelemetryFlusher()
    for i in range(3):
        ctx.saw(f"p{i}", PrinterStatus(state="idle", nozzle_actual=22.0))
    assert await flusher.flush(ctx) == 3  # type: ignore[arg-type]
    assert len(ctx.sent) == 1 and ctx.sent[0][0] == Op.PRINTER_TELEMETRY
    assert [s["printer_id"] for s in ctx.sent[0][1]["statuses"]] == ["p0", "p1", "p2"]
    ctx.saw("p1", PrinterStatus(state="idle", nozzle_actual=22.3))  # inside the deadband
    assert await flusher.flush(ctx) == 0  # type: ignore[arg-type]
    assert len(ctx.sent) == 1
    ctx.saw("p2", PrinterStatus(state="printing", nozzle_actual=22.0, file_name="x.gcode"))
    assert await flusher.flush(ctx) == 1  # type: ignore[arg-type]
    assert [s["printer_id"] for s in ctx.sent[1][1]["statuses"]] == ["p2"]
    assert WorkerContext  # the real context offers the same two calls


async def test_an_unchanged_status_is_committed_again_after_the_refresh_period() -> None:
    from mes.workers.context import Seen
    from mes.workers.telemetry import REFRESH_SECONDS, refresh_after

    ctx = FakeContext()
    flusher = TelemetryFlusher()
    idle = PrinterStatus(state="idle", nozzle_actual=22.0)
    ctx.seen["p"] = Seen(idle, 1000.0)
    assert await flusher.flush(ctx) == 1  # type: ignore[arg-type]
    after = float(math.ceil(refresh_after("p")))  # whole seconds: no rounding at the edge
    assert REFRESH_SECONDS / 2 <= after <= REFRESH_SECONDS
    ctx.seen["p"] = Seen(idle, 1000.0 + after - 1)
    assert await flusher.flush(ctx) == 0  # type: ignore[arg-type]
    ctx.seen["p"] = Seen(idle, 1000.0 + after)
    assert await flusher.flush(ctx) == 1  # type: ignore[arg-type]
    assert ctx.sent[-1][1]["statuses"][0]["observed_at"] == 1000.0 + after


async def test_printers_seen_together_are_refreshed_spread_over_time() -> None:
    from mes.workers.context import Seen
    from mes.workers.telemetry import REFRESH_SECONDS

    ctx = FakeContext()
    ctx.epochs.update({f"p{i}": 7 for i in range(1000)})  # all driven here
    flusher = TelemetryFlusher()
    idle = PrinterStatus(state="idle", nozzle_actual=22.0)
    for i in range(1000):
        ctx.seen[f"p{i}"] = Seen(idle, 1000.0)
    assert await flusher.flush(ctx) == 1000  # type: ignore[arg-type]
    per_second = []
    for second in range(1, int(REFRESH_SECONDS) + 1):
        for i in range(1000):
            ctx.seen[f"p{i}"] = Seen(idle, 1000.0 + second)
        per_second.append(await flusher.flush(ctx))  # type: ignore[arg-type]
    assert sum(per_second) == 1000  # each refreshed once within REFRESH_SECONDS
    assert max(per_second) < 150  # spread over the second half of the period
