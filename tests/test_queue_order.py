"""The queue's order (job.reorder, level 7): operators set a waiting job's priority or place
it beside another; the scheduler takes jobs in that order; a refused move changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from mes.state import queries
from mes.state.digest import state_digest
from mes.state.ops import Op
from mes.state.queue_order import MAX_PRIORITY
from mes.state.queue_view import estimated_starts, queue_head, queue_page
from mes.state.tables import QUEUE_ORDER, print_jobs
from mes.workers.scheduler import assign
from tests.examples import examples
from tests.test_scheduler import FILE, PRINTERS, SPOOLS, Farm

REORDER = Op.JOB_REORDER


def reorder(farm: Farm, job_id: str, **place: Any) -> Any:
    farm.ts += 1
    return farm.machine.apply({"op": REORDER, "v": 7, "ts": farm.ts,
                               "args": {"id": job_id, **place}})


def queue(conn: Connection) -> list[str]:
    """Waiting jobs in queue order, as SQL sorts them."""
    query = select(print_jobs.c.id).where(print_jobs.c.status == "Queued",
                                          print_jobs.c.phase.is_(None)).order_by(*QUEUE_ORDER)
    return [r.id for r in conn.execute(query)]


def sorted_in_python(conn: Connection) -> list[str]:
    rows = [dict(r._mapping) for r in conn.execute(select(print_jobs).where(
        print_jobs.c.status == "Queued", print_jobs.c.phase.is_(None)))]
    return [r["id"] for r in sorted(rows, key=queries.queue_key)]


@pytest.fixture
def farm() -> Iterator[Farm]:
    f = Farm()
    f.spool("s0")
    for n in range(5):
        f.job(f"j{n}", None, "s0")
    yield f
    f.machine.close()


def test_priority_then_placing_before_and_after(farm: Farm) -> None:
    read = farm.machine.read
    assert read(queue) == ["j0", "j1", "j2", "j3", "j4"]
    moved = reorder(farm, "j3", priority=5)
    assert moved.ok and moved.value["priority"] == 5
    assert read(queue) == ["j3", "j0", "j1", "j2", "j4"]
    assert reorder(farm, "j4", before="j1").ok
    assert read(queue) == ["j3", "j0", "j4", "j1", "j2"]
    assert reorder(farm, "j0", after="j3").ok  # takes j3's priority
    assert read(queue) == ["j3", "j0", "j4", "j1", "j2"]
    assert read(lambda c: queries.get_job(c, "j0"))["priority"] == 5
    assert reorder(farm, "j2", before="j3").ok
    assert read(queue) == ["j2", "j3", "j0", "j4", "j1"]
    # Back to priority 0: just before the first younger job of it (j4, placed before j1).
    assert reorder(farm, "j2", priority=0).ok
    assert read(queue) == ["j3", "j0", "j2", "j4", "j1"]
    assert read(queue) == read(sorted_in_python)
    # The page of the queue gives positions in the whole queue.
    page = read(lambda c: queue_page(c, None, None, 3))
    assert [(j["id"], j["position"]) for j in page] == [("j3", 1), ("j0", 2), ("j2", 3)]


def test_a_job_of_default_place_reads_as_in_earlier_releases(farm: Farm) -> None:
    """Command results are replicated: a job whose place was never set has no new keys."""
    job = farm.machine.read(lambda c: queries.get_job(c, "j1"))
    assert "priority" not in job and "queue_rank" not in job
    assert reorder(farm, "j1", priority=1).ok
    assert farm.machine.read(lambda c: queries.get_job(c, "j1"))["priority"] == 1


@pytest.mark.parametrize(("place", "code"), [
    ({}, "one_place"),
    ({"priority": 1, "before": "j0"}, "one_place"),
    ({"priority": MAX_PRIORITY + 1}, "out_of_range"),
    ({"priority": True}, "invalid_type"),
    ({"before": "j1"}, "same_job"),
    ({"before": "nope"}, "job_not_found"),
    ({"after": "j9"}, "job_not_found"),
    ({"colour": "red"}, "unknown_field"),
])
def test_a_refused_move_changes_nothing(farm: Farm, place: dict[str, Any], code: str) -> None:
    before = farm.machine.read(state_digest)
    refused = reorder(farm, "j1", **place)
    assert not refused.ok and refused.error["code"] == code, refused.error
    assert farm.machine.read(state_digest) == before


def test_only_waiting_jobs_move(farm: Farm) -> None:
    farm.do(Op.JOB_SET_STATUS, id="j2", status="Canceled")
    for job, place in (("j2", {"priority": 3}), ("j1", {"before": "j2"})):
        refused = reorder(farm, job, **place)
        assert not refused.ok and refused.error["code"] == "not_waiting", refused.error
    assert reorder(farm, "nope", priority=1).error["code"] == "job_not_found"


def test_older_formats_have_no_reorder(farm: Farm) -> None:
    farm.ts += 1
    outcome = farm.machine.apply({"op": REORDER, "ts": farm.ts,
                                  "args": {"id": "j1", "priority": 1}})
    assert not outcome.ok


def test_a_priority_places_a_job_by_age_even_after_renumbering(farm: Farm) -> None:
    """Renumbered ranks are below every creation time: a job given a priority still goes
    just before the first younger job of that priority, not to the end."""
    for step in range(60):  # bisect at one spot until its priority is renumbered
        assert reorder(farm, "j1" if step % 2 else "j2", after="j0").ok
    ranks = farm.machine.read(lambda c: [r.queue_rank for r in c.execute(
        select(print_jobs.c.queue_rank))])
    assert any(rank is not None and rank < 0 for rank in ranks)  # renumbered
    order = farm.machine.read(queue)
    assert reorder(farm, "j0", priority=0).ok
    younger = next(j for j in order if j != "j0" and j > "j0")  # ids follow creation here
    after = farm.machine.read(queue)
    assert after.index(younger) == after.index("j0") + 1, after
    # A job moved after the last one stays behind jobs queued after the move.
    assert reorder(farm, "j3", after=after[-1]).ok
    farm.job("j9", None, "s0")
    assert farm.machine.read(queue)[-2:] == ["j3", "j9"]


def test_many_moves_at_one_spot_renumber_and_keep_the_order(farm: Farm) -> None:
    """Jobs created in one burst have ranks a microsecond apart: bisecting runs out of
    float precision within a few moves, and the priority's ranks are renumbered."""
    for n in range(5, 9):
        farm.job(f"j{n}", None, "s0")
    expected = farm.machine.read(queue)
    for step in range(120):
        mover = expected[-1] if step % 2 else expected[2]
        target = expected[1]
        assert reorder(farm, mover, after=target).ok
        expected.remove(mover)
        expected.insert(expected.index(target) + 1, mover)
        assert farm.machine.read(queue) == expected, step
    assert farm.machine.read(queue) == farm.machine.read(sorted_in_python)


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["priority", "before",
                                                                    "after"]),
                                st.integers(-3, 3)), max_size=25))
def test_moves_place_the_job_and_keep_every_other_order(
        moves: list[tuple[int, str, int]]) -> None:
    """After every move: the moved job is just before (or after) its target, or has its new
    priority; every other job keeps its order; SQL's order is `queue_key`'s."""
    farm = Farm()
    try:
        farm.spool("s0")
        for n in range(8):
            farm.job(f"j{n}", None, "s0")
        for index, where, value in moves:
            before = farm.machine.read(queue)
            job = f"j{index}"
            place: dict[str, Any] = ({"priority": value} if where == "priority"
                                     else {where: f"j{(index + value) % 8}"})
            outcome = reorder(farm, job, **place)
            after = farm.machine.read(queue)
            if not outcome.ok:
                assert outcome.error["code"] == "same_job" and after == before
                continue
            assert [j for j in after if j != job] == [j for j in before if j != job]
            at = after.index(job)
            if where == "before":
                assert after[at + 1] == place["before"]
            elif where == "after":
                assert after[at - 1] == place["after"]
            else:  # among its new priority's jobs by age: before the first one younger
                assert outcome.value.get("priority", 0) == value
                ages = farm.machine.read(lambda c: {
                    r.id: (r.priority, (r.created_at, r.id)) for r in c.execute(
                        select(print_jobs.c.id, print_jobs.c.priority, print_jobs.c.created_at))})
                band = [j for j in after if ages[j][0] == value]
                younger = next((j for j in band if j != job and ages[j][1] > ages[job][1]), None)
                at_band = band.index(job)
                if younger is None:
                    assert band[-1] == job, (band, job)
                else:
                    assert band[at_band + 1] == younger, (band, job)
            assert after == farm.machine.read(sorted_in_python)
    finally:
        farm.machine.close()


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    loaded=st.lists(st.sampled_from([*SPOOLS, None]), min_size=5, max_size=5),
    ready=st.lists(st.sampled_from(PRINTERS), unique=True, min_size=1),
    jobs=st.lists(st.tuples(st.sampled_from([*PRINTERS, None]), st.sampled_from(SPOOLS),
                            st.integers(-2, 2)), max_size=30),
    bound=st.integers(1, 6),
)
def test_the_scheduler_honours_priority(loaded: list[str | None], ready: list[str],
                                        jobs: list[tuple[str | None, str, int]],
                                        bound: int) -> None:
    """The scheduler's bounded reads pick what a walk of the whole queue in priority order
    would, and no job a chosen printer could take waits unassigned ahead of its job."""
    farm = Farm()
    try:
        farm.loaded(loaded)
        for n, (printer, spool, priority) in enumerate(jobs):
            farm.job(f"j{n:02d}", printer, spool)
            if priority:
                assert reorder(farm, f"j{n:02d}", priority=priority).ok
        printers = {p["id"]: p for p in farm.machine.read(queries.worker_printers)
                    if p["id"] in ready}
        bound = min(bound, len(printers))
        whole = farm.machine.read(queue_head)
        assert [j["id"] for j in whole] == farm.machine.read(sorted_in_python)
        startable = farm.machine.read(
            lambda c: queries.startable_jobs(c, list(printers.values()), bound))
        chosen = assign(startable, printers, bound)
        assert ([(j["id"], p["id"]) for j, p in chosen]
                == [(j["id"], p["id"]) for j, p in assign(whole, printers, bound)])
        given_to = {j["id"]: p["id"] for j, p in chosen}
        for job, printer in chosen:
            for ahead in whole[:whole.index(job)]:
                fits = (ahead["printer_id"] == printer["id"] if ahead["printer_id"]
                        else ahead["filament_id"] == printer["filament_id"])
                assert not fits or ahead["id"] in given_to, (ahead["id"], job["id"])
    finally:
        farm.machine.close()


def test_estimated_starts_follow_the_queue_and_each_printers_time() -> None:
    now = 1000.0
    free = {"a": ("s0", now), "b": ("s0", now + 600.0), "c": ("s1", None), "d": ("s1", now)}
    head = [
        {"id": "1", "file_id": FILE, "filament_id": "s0"},
        {"id": "2", "file_id": FILE, "filament_id": "s0"},
        {"id": "3", "file_id": FILE, "filament_id": "s0"},
        {"id": "4", "file_id": FILE, "filament_id": "s0", "approval": "pending"},
        {"id": "5", "file_id": FILE, "filament_id": "s1", "printer_id": "c"},
        {"id": "6", "file_id": FILE, "filament_id": "s1"},
        {"id": "7", "file_id": FILE, "filament_id": "s1"},
        {"id": "8", "file_id": None, "filament_id": "s0"},
    ]
    durations = {"1": 3600.0, "2": 100.0, "6": None}
    starts = estimated_starts(head, free, durations)
    assert starts == {
        "1": now,  # a is free now
        "2": now + 600.0,  # b ends its print before a ends job 1
        "3": now + 700.0,  # b again, after job 2's 100 s
        "4": None,  # waits for approval
        "5": None,  # its printer's time is not known
        "6": now,  # d, free now
        "7": None,  # d is busy for a time not known (job 6 states none), c unknown
        "8": None,  # no file: never sent
    }
