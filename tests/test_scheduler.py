"""The scheduler reads only what ready printers can start: bounded per tick, same FIFO choice."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from mes.printers.base import PrinterStatus
from mes.state import queries
from mes.state.machine import StateMachine
from mes.state.ops import Op
from mes.state.tables import print_jobs
from mes.workers.context import FarmView, Seen, WorkerContext
from mes.workers.scheduler import MAX_CLAIMS_PER_TICK, assign, schedule
from tests.examples import examples
from tests.shard_helpers import NODE, place

T = TypeVar("T")
FILE = hashlib.sha256(b"G28\n").hexdigest()


class Farm:
    """A state machine with printers, spools, one stored file and a command clock."""

    def __init__(self) -> None:
        self.machine = StateMachine()
        self.ts = 100.0
        self.do(Op.FILE_REGISTER, id=FILE, name="a.gcode", size=4)

    def do(self, op: str, **args: Any) -> Any:
        self.ts += 1
        outcome = self.machine.apply({"op": op, "args": args, "ts": self.ts})
        assert outcome.ok, outcome.error
        return outcome.value

    def printer(self, printer_id: str, spool: str | None) -> None:
        self.do(Op.PRINTER_CREATE, id=printer_id, worker=True, filament_id=spool, api="Mock",
                url="http://mock.invalid")
        place(self.machine, printer_id)

    def spool(self, spool_id: str) -> None:
        self.do(Op.FILAMENT_CREATE, id=spool_id, type="PLA", color="k",
                total_weight_in_grams=100_000)

    def loaded(self, spools: list[str | None]) -> None:
        """Every spool of SPOOLS, and printer PRINTERS[n] with spools[n] loaded."""
        for spool in SPOOLS:
            self.spool(spool)
        for printer, spool in zip(PRINTERS, spools, strict=True):
            self.printer(printer, spool)

    def job(self, job_id: str, printer_id: str | None, spool: str, with_file: bool = True
            ) -> None:
        extra: dict[str, Any] = {"file_id": FILE} if with_file else {"filepath": "x.gcode"}
        self.do(Op.JOB_CREATE, id=job_id, printer_id=printer_id, filament_id=spool,
                print_weight_in_grams=1, **extra)


@pytest.fixture
def farm() -> Iterator[Farm]:
    f = Farm()
    yield f
    f.machine.close()


@dataclass
class CountingMachine:
    """Reads through the real machine, counting the rows each read returned."""

    machine: StateMachine
    rows: list[int] = field(default_factory=list)

    def read_now(self, query: Callable[[Connection], T]) -> T:
        value = self.machine.read(query)
        self.rows.append(len(value) if isinstance(value, list | dict) else 1)
        return value

    @property
    def farm_version(self) -> int:
        return self.machine.farm_version




class FakeContext:
    """What `schedule` uses of a WorkerContext: the view, what printers said, commands."""

    def __init__(self, farm: Farm, idle: list[str]) -> None:
        self.farm = farm
        self.node = CountingMachine(farm.machine)
        self.seen = {p: Seen(PrinterStatus(state="idle"), 0.0) for p in idle}
        self.claimed: set[str] = set()
        self.claims: list[tuple[str, str]] = []
        self.startable: Any = None

    def view(self) -> FarmView:
        read = self.farm.machine.read
        printers = {p["id"]: p for p in read(lambda c: queries.driven_printers(c, NODE))}
        return FarmView(printers, read(queries.active_jobs_by_printer), 0.0)

    async def command(self, op: str, for_printer: str | None = None,
                      **args: Any) -> dict[str, Any] | None:
        assert op == Op.JOB_CLAIM
        assert for_printer == args["printer_id"]  # the one printer the claim changes
        self.claims.append((args["job_id"], args["printer_id"]))
        value: dict[str, Any] = self.farm.do(op, **args)
        return value


async def test_a_tick_reads_only_what_ready_printers_can_start(farm: Farm) -> None:
    farm.spool("s1")
    farm.spool("s2")
    for printer, spool in (("busy", "s1"), ("ready", "s2")):
        farm.printer(printer, spool)
    for n in range(1500):  # a long queue that only the busy printer may take
        farm.job(f"a{n:04d}", "busy", "s1")
    for n in range(300):  # and jobs without a file, which are never sent
        farm.job(f"b{n:03d}", None, "s2", with_file=False)
    farm.job("c1", None, "s2")
    farm.job("c2", "ready", "s2")
    ctx = FakeContext(farm, idle=["ready"])
    assert await schedule(cast(WorkerContext, ctx)) == 1
    assert ctx.claims == [("c1", "ready")]
    # one ready printer: at most one row for it and one for its spool
    assert sum(ctx.node.rows) <= 2


async def test_an_unchanged_farm_is_not_read_again(farm: Farm) -> None:
    farm.spool("s")
    for n in range(3):
        farm.printer(f"p{n}", "s")
    farm.spool("other")
    farm.job("j0", None, "other")  # no ready printer can take it
    ctx = FakeContext(farm, idle=["p0", "p1", "p2"])
    assert await schedule(cast(WorkerContext, ctx)) == 0
    reads = len(ctx.node.rows)
    assert reads >= 1
    assert await schedule(cast(WorkerContext, ctx)) == 0
    assert len(ctx.node.rows) == reads  # same printers, same farm: nothing read
    del ctx.seen["p2"]  # fewer ready printers: read again
    assert await schedule(cast(WorkerContext, ctx)) == 0
    assert len(ctx.node.rows) > reads
    farm.job("j1", None, "s")  # a command changed the farm: read again, and claim it
    assert await schedule(cast(WorkerContext, ctx)) == 1
    assert ctx.claims == [("j1", "p0")]


async def test_at_most_max_claims_per_tick(farm: Farm) -> None:
    farm.spool("s")
    count = MAX_CLAIMS_PER_TICK + 5
    for n in range(count):
        farm.printer(f"p{n:02d}", "s")
    for n in range(count * 2):
        farm.job(f"j{n:03d}", None, "s")
    ctx = FakeContext(farm, idle=[f"p{n:02d}" for n in range(count)])
    assert await schedule(cast(WorkerContext, ctx)) == MAX_CLAIMS_PER_TICK
    assert [job for job, _ in ctx.claims] == [f"j{n:03d}" for n in range(MAX_CLAIMS_PER_TICK)]
    assert sum(ctx.node.rows) <= MAX_CLAIMS_PER_TICK * 2
    assert await schedule(cast(WorkerContext, ctx)) == 5  # the rest in the next tick


def all_dispatchable(conn: Connection) -> list[dict[str, Any]]:
    """The whole FIFO queue, as the scheduler used to read it."""
    query = select(print_jobs).where(
        print_jobs.c.status == "Queued", print_jobs.c.phase.is_(None),
        print_jobs.c.file_id.is_not(None)).order_by(print_jobs.c.created_at, print_jobs.c.id)
    return [dict(r._mapping) for r in conn.execute(query)]


PRINTERS = [f"p{n}" for n in range(5)]
SPOOLS = ["s0", "s1", "s2"]


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    loaded=st.lists(st.sampled_from([*SPOOLS, None]), min_size=5, max_size=5),
    ready=st.lists(st.sampled_from(PRINTERS), unique=True, min_size=1),
    jobs=st.lists(st.tuples(st.sampled_from([*PRINTERS, None]), st.sampled_from(SPOOLS),
                            st.booleans()), max_size=40),
    bound=st.integers(1, 6),
)
# Two jobs for one printer ahead of one for another: both printers get a job in one tick.
@example(loaded=["s0"] * 5, ready=["p0", "p1"], bound=2,
         jobs=[("p0", "s0", True), ("p0", "s0", True), ("p1", "s0", True)])
def test_bounded_reads_choose_what_the_whole_queue_would(
        loaded: list[str | None], ready: list[str],
        jobs: list[tuple[str | None, str, bool]], bound: int) -> None:
    farm = Farm()
    try:
        farm.loaded(loaded)
        for n, (printer, spool, with_file) in enumerate(jobs):
            farm.job(f"j{n:02d}", printer, spool, with_file)
        printers = {p["id"]: p for p in farm.machine.read(queries.worker_printers)
                    if p["id"] in ready}
        bound = min(bound, len(printers))
        everything = farm.machine.read(all_dispatchable)
        startable = farm.machine.read(
            lambda c: queries.startable_jobs(c, list(printers.values()), bound))
        assert len(startable) <= bound * 2 * len(printers)
        expected = [(j["id"], p["id"]) for j, p in assign(everything, printers, bound)]
        chosen = [(j["id"], p["id"]) for j, p in assign(startable, printers, bound)]
        assert chosen == expected
    finally:
        farm.machine.close()


def test_many_ready_printers_cost_a_few_queries(farm: Farm) -> None:
    farm.spool("s")
    for n in range(200):
        farm.printer(f"p{n:03d}", "s")
    printers = farm.machine.read(queries.worker_printers)
    statements: list[str] = []

    def counted(conn: Connection) -> list[dict[str, Any]]:
        real = conn.execute

        def execute(*args: Any, **kwargs: Any) -> Any:
            statements.append(str(args[0]))
            return real(*args, **kwargs)

        conn.execute = execute  # type: ignore[method-assign]
        return queries.startable_jobs(conn, printers, MAX_CLAIMS_PER_TICK)

    assert farm.machine.read(counted) == []
    assert len(statements) == 1  # nothing dispatchable: one look, whatever the printers
    farm.job("j0", "p150", "s")
    farm.job("j1", None, "s")
    statements.clear()
    assert [j["id"] for j in farm.machine.read(counted)] == ["j0", "j1"]
    assert len(statements) == 3  # the look, the named jobs, the one spool's jobs
