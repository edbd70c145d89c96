"""The queue's order: operators give a waiting job a priority, or move it just before or
just after another waiting job (job.reorder, level 7).

The queue is ordered by priority (higher first), then by rank, then by id; a job's rank is
its creation time until it is moved (`queue_rank` null). A moved job takes the priority of
the job it is placed beside and a rank between that job and its neighbour in the same
priority; a job given a priority goes just before the first job of that priority created
after it. Floats bisected at one spot run out of precision: then every waiting job of that
priority is given a small whole rank in its current order first (`_renumber`), which keeps
the order and leaves room for about fifty more moves at that spot. Every node computes the
same floats from the same state, so they agree.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import bindparam, select, update

from mes.state import queries
from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand, NotFound, RuleViolation
from mes.state.prepared import Prepared
from mes.state.queries import rank_of
from mes.state.tables import QUEUE_ORDER, QUEUE_WAITING, print_jobs

MIN_PRIORITY, MAX_PRIORITY = -100, 100
PLACES = ("priority", "before", "after")

_SET_PLACE = Prepared(update(print_jobs).where(print_jobs.c.id == bindparam("job_id"))
                      .values(priority=bindparam("priority"), queue_rank=bindparam("rank"),
                              updated_at=bindparam("ts")))


def is_waiting(job: dict[str, Any]) -> bool:
    """Whether a job is in the queue: queued and not being sent to a printer."""
    return job["status"] == "Queued" and job["phase"] is None


def reorder(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Give a waiting job a priority (it then waits among that priority's jobs by age: just
    before the first of them created after it), or place it just `before` or just `after`
    another waiting job (taking that job's priority)."""
    args.reject_unknown(("id", *PLACES))
    given = [name for name in PLACES if args.has(name)]
    if len(given) != 1:
        raise InvalidCommand("one_place", "give exactly one of priority, before or after",
                             given[1] if len(given) > 1 else "priority")
    job = _waiting(ctx, args.ident("id"), "id")
    if given == ["priority"]:
        priority = args.integer("priority", MIN_PRIORITY, MAX_PRIORITY)
        rank = _rank_by_age(ctx, job, priority)
    else:
        where = given[0]
        other = _waiting(ctx, args.ident(where), where)
        if other["id"] == job["id"]:
            raise InvalidCommand("same_job", "a job cannot be placed beside itself", where)
        priority = int(other.get("priority") or 0)
        rank = _rank_beside(ctx, job["id"], other, where == "before")
    _SET_PLACE.run(ctx.conn, {"job_id": job["id"], "priority": priority, "rank": rank,
                              "ts": ctx.ts})
    ctx.changed("print_job", job["id"], "updated")
    changed = queries.get_job(ctx.conn, job["id"])
    assert changed is not None
    return changed


def _waiting(ctx: ApplyContext, job_id: str | None, field: str) -> dict[str, Any]:
    job = queries.get_job(ctx.conn, job_id or "")
    if job is None:
        raise NotFound("job_not_found", f"print job {job_id!r} does not exist", field)
    if not is_waiting(job):
        raise RuleViolation("not_waiting", f"print job {job_id!r} is not waiting in the queue "
                            "(it is printing, being sent to a printer, or ended)", field)
    return job


def _band(ctx: ApplyContext, priority: int, moving: str) -> list[dict[str, Any]]:
    """The waiting jobs of one priority but `moving`, in queue order."""
    query = select(print_jobs.c.id, print_jobs.c.priority, print_jobs.c.queue_rank,
                   print_jobs.c.created_at).where(
        QUEUE_WAITING, print_jobs.c.priority == priority, print_jobs.c.id != moving
    ).order_by(*QUEUE_ORDER)
    return [dict(r._mapping) for r in ctx.conn.execute(query)]


def _rank_beside(ctx: ApplyContext, moving: str, other: dict[str, Any], before: bool) -> float:
    """A rank that places a job just before (or after) `other` in `other`'s priority."""
    for _ in range(2):
        band = _band(ctx, int(other.get("priority") or 0), moving)
        at = next(i for i, j in enumerate(band) if j["id"] == other["id"])
        mine = rank_of(band[at])
        near = at - 1 if before else at + 1
        if not 0 <= near < len(band):
            # Last: also after every job queued before this moment, not before those queued
            # in the next second.
            return mine - 1.0 if before else max(math.nextafter(mine, math.inf), ctx.ts)
        theirs = rank_of(band[near])
        middle = (mine + theirs) / 2
        if middle not in (mine, theirs):
            return middle
        _renumber(ctx, band)
    raise AssertionError("renumbered ranks leave room between neighbours")


def _rank_by_age(ctx: ApplyContext, job: dict[str, Any], priority: int) -> float | None:
    """A rank that places `job` among the waiting jobs of `priority` by age: just before the
    first of them (in queue order) created after it, or last (None: its creation time
    already does)."""
    band = _band(ctx, priority, job["id"])
    age = (job["created_at"], job["id"])
    later = next((j for j in band if (j["created_at"], j["id"]) > age), None)
    if later is not None:
        return _rank_beside(ctx, job["id"], later, before=True)
    if not band or (job["created_at"], job["id"]) > (rank_of(band[-1]), band[-1]["id"]):
        return None
    return math.nextafter(rank_of(band[-1]), math.inf)


def _renumber(ctx: ApplyContext, band: list[dict[str, Any]]) -> None:
    """Give a priority's waiting jobs the ranks -n .. -1 in their order: below any creation
    time, so jobs queued later still come after them."""
    count = len(band)
    for i, job in enumerate(band):
        ctx.conn.execute(update(print_jobs).where(print_jobs.c.id == job["id"])
                         .values(queue_rank=float(i - count)))
        ctx.changed("print_job", job["id"], "updated")
