"""Shards: apply's per-printer fencing, leases and moves straight on a StateMachine, and the
balancer's plan as a pure function."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mes.node import FarmNode
from mes.raft.writer import NoLeader
from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from mes.workers.balancer import Move, Slot, plan, silent_nodes
from mes.workers.host import ShardLeader
from tests.farm_helpers import eventually, running_farm
from tests.shard_helpers import NODE, OTHER, do, epoch_of, leader_epoch, place

FILE = "c" * 64
THIRD = "127.0.0.1:7003"


def apply(machine: StateMachine, op: str, **args: Any) -> Outcome:
    return machine.apply({"op": op, "args": args, "rid": None, "ts": time.time()})


def row(machine: StateMachine, sql: str) -> tuple[Any, ...]:
    found = machine.read(lambda c: c.exec_driver_sql(sql).first())
    assert found is not None
    return tuple(found)


@pytest.fixture
def farm() -> Iterator[StateMachine]:
    machine = StateMachine()
    do(machine, Op.FILAMENT_CREATE, id="f1", type="PLA", color="red", total_weight_in_grams=1000)
    do(machine, Op.FILE_REGISTER, id=FILE, name="a.gcode", size=10)
    for printer in ("p1", "p2"):
        do(machine, Op.PRINTER_CREATE, id=printer, api="Mock", worker=True, filament_id="f1")
    do(machine, Op.JOB_CREATE, id="j", filament_id="f1", file_id=FILE, print_weight_in_grams=5)
    yield machine
    machine.close()


def claim(machine: StateMachine, epoch: int, printer: str = "p1") -> Outcome:
    return apply(machine, Op.JOB_CLAIM, job_id="j", printer_id=printer, epoch=epoch,
                 printer_filename="mes-j.gcode")


def test_a_new_printer_is_driven_by_nobody_and_takes_no_worker_command(
        farm: StateMachine) -> None:
    assert row(farm, "SELECT node, epoch FROM assignments WHERE printer_id = 'p1'") == (None, 0)
    refused = claim(farm, 1)
    assert refused.error is not None and refused.error["code"] == "stale_epoch"


def test_only_the_current_assignment_epoch_applies(farm: StateMachine) -> None:
    epoch = place(farm, "p1")
    for stale in (epoch + 1, epoch + 7):
        refused = claim(farm, stale)
        assert refused.error is not None and refused.error["code"] == "stale_epoch"
    assert row(farm, "SELECT status, phase FROM print_jobs") == ("Queued", None)
    assert claim(farm, epoch).ok
    assert row(farm, "SELECT phase, claim_epoch FROM print_jobs") == ("starting", epoch)


def test_a_worker_command_about_a_job_on_another_printer_is_refused(
        farm: StateMachine) -> None:
    first, second = place(farm, "p1"), place(farm, "p2")
    assert claim(farm, first).ok
    refused = apply(farm, Op.JOB_STARTED, job_id="j", printer_id="p2", epoch=second)
    assert refused.error is not None and refused.error["code"] == "wrong_printer"
    assert apply(farm, Op.JOB_STARTED, job_id="j", printer_id="p1", epoch=first).ok


def test_a_move_from_a_live_node_is_a_handoff(farm: StateMachine) -> None:
    epoch = place(farm, "p1", NODE)
    do(farm, Op.NODE_LEASE, node=OTHER)
    moved = do(farm, Op.SHARD_ASSIGN, leader_epoch=leader_epoch(farm), now=time.time(),
               moves=[{"printer_id": "p1", "epoch": epoch, "node": OTHER}])
    assert moved["moves"] == {"p1": "releasing"}
    # Until the driver lets go, it drives (its epoch holds) and nobody else does.
    assert row(farm, "SELECT node, epoch, release, moving_to FROM assignments "
                     "WHERE printer_id = 'p1'") == (NODE, epoch, 1, OTHER)
    assert claim(farm, epoch).ok
    released = do(farm, Op.SHARD_RELEASE, printer_id="p1", epoch=epoch)
    assert released == {"printer_id": "p1", "node": OTHER}
    new = epoch_of(farm, "p1")
    assert new > epoch
    refused = apply(farm, Op.JOB_STARTED, job_id="j", printer_id="p1", epoch=epoch)
    assert refused.error is not None and refused.error["code"] == "stale_epoch"
    assert apply(farm, Op.JOB_STARTED, job_id="j", printer_id="p1", epoch=new).ok


def test_a_move_to_a_node_without_a_live_lease_is_skipped(farm: StateMachine) -> None:
    value = do(farm, Op.SHARD_ASSIGN, leader_epoch=leader_epoch(farm), now=time.time(),
               moves=[{"printer_id": "p1", "epoch": 0, "node": OTHER}])
    assert value["moves"] == {"p1": "skipped"}
    assert row(farm, "SELECT node, epoch FROM assignments WHERE printer_id = 'p1'") == (None, 0)


def test_a_plan_on_a_stale_view_of_epochs_is_skipped(farm: StateMachine) -> None:
    place(farm, "p1", NODE)
    do(farm, Op.NODE_LEASE, node=OTHER)
    value = do(farm, Op.SHARD_ASSIGN, leader_epoch=leader_epoch(farm), now=time.time(),
               moves=[{"printer_id": "p1", "epoch": 0, "node": OTHER}])
    assert value["moves"] == {"p1": "skipped"}


def test_expiry_needs_the_lease_unrenewed_then_moves_at_once(farm: StateMachine) -> None:
    epoch = place(farm, "p1", NODE)
    do(farm, Op.PRINTER_UPDATE, id="p2", hub=NODE)
    pinned = place(farm, "p2", NODE)
    do(farm, Op.NODE_LEASE, node=OTHER)
    seq = do(farm, Op.NODE_LEASE, node=NODE)["seq"]
    do(farm, Op.NODE_LEASE, node=NODE)  # renewed after the leader judged it silent
    plan_args = {"leader_epoch": leader_epoch(farm), "now": time.time(),
                 "expire": [{"node": NODE, "seq": seq, "renewed_at": 0, "silent_for": 11}],
                 "moves": [{"printer_id": "p1", "epoch": epoch, "node": OTHER}]}
    refused = apply(farm, Op.SHARD_ASSIGN, **plan_args)
    assert refused.error is not None and refused.error["code"] == "lease_renewed"
    assert row(farm, f"SELECT expired FROM node_leases WHERE node = '{NODE}'") == (0,)
    assert epoch_of(farm, "p1") == epoch
    value = do(farm, Op.SHARD_ASSIGN, **{**plan_args, "expire": [
        {"node": NODE, "seq": seq + 1, "renewed_at": 0, "silent_for": 11}]})
    assert value == {"expired": [NODE], "moves": {"p1": "moved", "p2": "unassigned"}}
    assert row(farm, "SELECT node FROM assignments WHERE printer_id = 'p1'") == (OTHER,)
    # The pinned printer of the dead hub is driven by nobody, under a new epoch.
    assert row(farm, "SELECT node FROM assignments WHERE printer_id = 'p2'") == (None,)
    assert epoch_of(farm, "p2") > pinned
    for printer, old in (("p1", epoch), ("p2", pinned)):
        refused = apply(farm, Op.PRINTER_ATTENTION, id=printer, epoch=old, reason="x")
        assert refused.error is not None and refused.error["code"] == "stale_epoch"


def test_a_plan_of_a_deposed_leader_is_refused(farm: StateMachine) -> None:
    old = leader_epoch(farm)
    do(farm, Op.LEADER_BEGIN, leader="other")
    do(farm, Op.NODE_LEASE, node=NODE)
    refused = apply(farm, Op.SHARD_ASSIGN, leader_epoch=old, now=time.time(),
                    moves=[{"printer_id": "p1", "epoch": 0, "node": NODE}])
    assert refused.error is not None and refused.error["code"] == "stale_epoch"


def test_telemetry_writes_current_statuses_and_lists_stale_ones(farm: StateMachine) -> None:
    epoch = place(farm, "p1")
    value = do(farm, Op.PRINTER_TELEMETRY, statuses=[
        {"printer_id": "p1", "epoch": epoch, "state": "idle", "observed_at": 1.0},
        {"printer_id": "p2", "epoch": epoch, "state": "printing", "observed_at": 1.0}])
    assert value == {"written": 1, "stale": ["p2"]}
    assert farm.read(lambda c: c.exec_driver_sql(
        "SELECT printer_id FROM printer_status").scalars().all()) == ["p1"]


def test_a_hub_is_a_node_address(farm: StateMachine) -> None:
    for bad in ("nonsense", "host:0", "host:99999", "a b:7000", 7000):
        refused = apply(farm, Op.PRINTER_UPDATE, id="p1", hub=bad)
        assert refused.error is not None and refused.error["code"] == "invalid_node", bad
    assert do(farm, Op.PRINTER_UPDATE, id="p1", hub="10.0.0.5:7000")["hub"] == "10.0.0.5:7000"
    assert do(farm, Op.PRINTER_UPDATE, id="p1", hub=None)["hub"] is None


# -- the balancer ---------------------------------------------------------------------------


def slots(count: int, node: str | None = None, prefix: str = "p") -> list[Slot]:
    return [Slot(f"{prefix}{i:02d}", None, node, 1) for i in range(count)]


def after(start: list[Slot], moves: list[Move]) -> dict[str, str | None]:
    where = {s.printer_id: s.node for s in start}
    where.update({m.printer_id: m.node for m in moves})
    return where


def test_new_printers_spread_evenly() -> None:
    start = slots(30)
    moves = plan(start, [NODE, OTHER, THIRD])
    assert len(moves) == 30
    assert Counter(after(start, moves).values()) == {NODE: 10, OTHER: 10, THIRD: 10}


def test_a_balanced_farm_stays_put() -> None:
    start = slots(10, NODE) + slots(10, OTHER, "q") + slots(11, THIRD, "r")
    assert plan(start, [NODE, OTHER, THIRD]) == []


def test_a_dead_nodes_printers_go_to_the_live_ones_and_nothing_else_moves() -> None:
    start = slots(10, NODE) + slots(10, OTHER, "q") + slots(10, THIRD, "r")
    moves = plan(start, [NODE, OTHER])
    assert {m.printer_id[0] for m in moves} == {"r"} and len(moves) == 10
    assert Counter(after(start, moves).values()) == {NODE: 15, OTHER: 15}


def test_a_node_that_comes_back_takes_a_fair_share_with_the_fewest_moves() -> None:
    start = slots(15, NODE) + slots(15, OTHER, "q")
    moves = plan(start, [NODE, OTHER, THIRD])
    assert len(moves) == 10 and all(m.node == THIRD for m in moves)
    assert Counter(after(start, moves).values()) == {NODE: 10, OTHER: 10, THIRD: 10}


def test_pinned_printers_stay_on_their_hub_or_on_nobody() -> None:
    start = [Slot("a", NODE, None, 0), Slot("b", OTHER, OTHER, 3), Slot("c", THIRD, THIRD, 4)]
    moves = plan(start + slots(3), [NODE, OTHER])
    where = after(start + slots(3), moves)
    assert (where["a"], where["b"], where["c"]) == (NODE, OTHER, None)
    # The pinned printers count: the floating ones fill the other nodes first.
    assert Counter(where.values()) == {NODE: 3, OTHER: 2, None: 1}


def test_a_handoff_under_way_is_left_alone() -> None:
    start = [Slot("a", None, NODE, 2, release=True, moving_to=OTHER), Slot("b", None, NODE, 3)]
    assert plan(start, [NODE, OTHER]) == []
    # Its target died: the printer is placed again (here: kept where it is).
    assert plan(start, [NODE]) == [Move("a", 2, NODE)]


def test_no_live_node_moves_only_pinned_printers_off() -> None:
    start = [Slot("a", NODE, NODE, 1), Slot("b", None, None, 0)]
    assert plan(start, []) == [Move("a", 1, None)]


@given(st.lists(st.sampled_from([None, NODE, OTHER, THIRD, "127.0.0.1:7009"]), max_size=60),
       st.sets(st.sampled_from([NODE, OTHER, THIRD]), min_size=1))
def test_every_plan_places_every_floating_printer_evenly(nodes: list[str | None],
                                                        live: set[str]) -> None:
    start = [Slot(f"p{i:02d}", None, node, i) for i, node in enumerate(nodes)]
    moves = plan(start, live)
    where = after(start, moves)
    assert all(node in live for node in where.values())
    load = Counter({n: 0 for n in live}) + Counter(where.values())
    counts = [load[n] for n in live]
    assert max(counts) - min(counts) <= 1
    # Only printers off a live node, or above their node's fair share, move: the fullest
    # nodes keep the rounded-up share, the others the rounded-down one.
    floor, extra = divmod(len(start), len(live))
    kept = sorted((c for n, c in Counter(s.node for s in start).items() if n in live),
                  reverse=True)
    bound = sum(1 for s in start if s.node not in live) + sum(
        max(0, c - (floor + (1 if rank < extra else 0))) for rank, c in enumerate(kept))
    assert len(moves) <= bound
    assert plan([Slot(s.printer_id, None, where[s.printer_id], s.epoch) for s in start],
                live) == []


def test_a_new_leader_gives_every_node_a_whole_lease() -> None:
    heard: dict[str, tuple[int, float]] = {}
    leases = [{"node": NODE, "seq": 5, "renewed_at": 1.0, "expired": False},
              {"node": OTHER, "seq": 9, "renewed_at": 1.0, "expired": True}]
    assert silent_nodes(leases, heard, 100.0, 10.0) == []
    assert heard == {NODE: (5, 100.0)}
    assert silent_nodes(leases, heard, 110.0, 10.0) == []
    assert [s["node"] for s in silent_nodes(leases, heard, 110.5, 10.0)] == [NODE]
    leases[0]["seq"] = 6  # renewed: a whole lease again from when it was seen
    assert silent_nodes(leases, heard, 111.0, 10.0) == []
    assert silent_nodes(leases, heard, 120.9, 10.0) == []
    assert silent_nodes(leases, heard, 121.1, 10.0)[0]["seq"] == 6


def test_a_job_for_a_pinned_printer_of_a_dead_hub_says_so() -> None:
    from mes.state.holds import FarmView, hold_of

    printer = {"id": "p1", "worker": True, "hub": NODE, "drive_state": "unreachable",
               "bed_clear": True}
    job = {"status": "Queued", "file_id": FILE, "printer_id": "p1"}
    hold = hold_of(job, FarmView({"p1": printer}, {}, {}, 0.0))
    assert hold is not None and hold.code == "printer_unreachable" and NODE in hold.message


# -- a node's lease, in process -------------------------------------------------------------


async def test_a_node_that_cannot_renew_its_lease_stops_its_workers_in_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A node with peers (a lone node keeps its lease: tests/test_lone_node_lease.py).
    monkeypatch.setattr(FarmNode, "cluster_size", property(lambda _: 3))
    async with running_farm(tmp_path, node_lease_seconds=3.0, node_lease_renew=0.5,
                            printer_worker_interval=0.1) as (node, api):
        body = {"id": "m0", "api": "Mock", "url": "http://mock-printer0:5000", "worker": True}
        assert (await api.post("/api/v1/printers", json=body)).status_code == 201
        host = node.workers
        assert host is not None

        async def driving() -> bool:
            return host.pool is not None and "m0" in host.pool.workers

        await eventually(driving, 10, "the node to drive its printer")
        shown = (await api.get("/api/v1/printers/m0")).json()
        assert (shown["driven_by"], shown["drive_state"]) == (node.self_address, "driven")
        worker = host.pool.workers["m0"][0] if host.pool else None
        assert worker is not None and host.pool is not None
        assert host.pool.ctx.may_act("m0", worker.epoch)

        real = node.submit

        async def no_quorum(op: str, args: Any, remember: bool = True) -> Outcome:
            if op == Op.NODE_LEASE:
                raise NoLeader("no leader committed node.lease")
            return await real(op, args, remember)

        monkeypatch.setattr(node, "submit", no_quorum)
        ctx = host.pool.ctx
        stopped_at: list[float] = []

        async def stopped() -> bool:
            if host.pool is None:
                stopped_at.append(time.monotonic())
            return host.pool is None

        await eventually(stopped, 10, "the workers stopped")
        # Stopped once the lease (less its margin) ran out, never before, and soon after (a
        # check period or two; generous for a loaded machine: may_act refuses meanwhile).
        assert 0 <= stopped_at[0] - host.lease.valid_until < 2.0
        assert not ctx.may_act("m0", worker.epoch)
        assert not host.lease.valid()
        # The lease commits again: the node drives its printer again, same assignment.
        monkeypatch.setattr(node, "submit", real)
        await eventually(driving, 10, "the node to drive its printer again")
        assert host.pool is not None and host.pool.workers["m0"][0].epoch == worker.epoch


def test_every_node_notes_when_it_saw_each_renewal_for_when_it_leads() -> None:
    from types import SimpleNamespace

    from mes.config import Settings
    from mes.workers.host import WorkerHost

    listeners: list[Any] = []
    port = SimpleNamespace(settings=Settings(_env_file=None),  # type: ignore[call-arg]
                           on_apply=listeners.append)
    host = WorkerHost(port)
    renewal = {"op": Op.NODE_LEASE, "args": {"node": NODE}}
    listeners[0](renewal, Outcome(value={"node": NODE, "seq": 3}))
    seq, first = host.heard[NODE]
    assert seq == 3
    listeners[0](renewal, Outcome(value={"node": NODE, "seq": 3}))  # a replay: same note
    listeners[0](renewal, Outcome(error={"code": "invalid_node"}))
    listeners[0]({"op": Op.NOOP}, Outcome())
    assert host.heard == {NODE: (3, first)}
    lease = {"node": NODE, "seq": 3, "renewed_at": 0.0, "expired": False}
    assert silent_nodes([lease], host.heard, first + 9.9, 10.0) == []
    assert [s["node"] for s in silent_nodes([lease], host.heard, first + 10.1, 10.0)] == [NODE]


def test_a_snapshot_from_before_shards_gets_hubs_and_assignments(farm: StateMachine) -> None:
    import sqlite3

    source = sqlite3.connect(":memory:")
    source.deserialize(farm.snapshot())
    for table in ("assignments", "node_leases", "counters"):
        source.execute(f"DROP TABLE {table}")
    source.execute("ALTER TABLE printers DROP COLUMN hub")
    source.execute("PRAGMA user_version = 0")  # as every image before release 0.2.0
    source.commit()
    farm.restore(source.serialize())
    assert row(farm, "SELECT node, epoch FROM assignments WHERE printer_id = 'p2'") == (None, 0)
    assert place(farm, "p1") >= 1
    assert do(farm, Op.PRINTER_UPDATE, id="p2", hub=NODE)["hub"] == NODE


async def test_the_balancer_reads_the_slots_again_only_after_a_change(node: FarmNode) -> None:
    me = node.self_address
    do(node.machine, Op.NODE_LEASE, node=me)
    epoch = int(do(node.machine, Op.LEADER_BEGIN, leader=me)["epoch"])
    balancer = ShardLeader(node, epoch)
    do(node.machine, Op.PRINTER_CREATE, id="p1", api="Mock", url="http://mock-1", worker=True)
    assert await balancer.step() and balancer.slot_reads == 1
    assert epoch_of(node.machine, "p1") > 0  # placed on this node (committed through Raft)
    assert await balancer.step() and balancer.slot_reads == 2  # the placement changed it
    for _ in range(3):
        do(node.machine, Op.NODE_LEASE, node=me)  # renewals change no slot
        assert await balancer.step()
    assert balancer.slot_reads == 2
    do(node.machine, Op.PRINTER_CREATE, id="p2", api="Mock", url="http://mock-2", worker=True)
    assert await balancer.step() and balancer.slot_reads == 3
    assert epoch_of(node.machine, "p2") > 0
