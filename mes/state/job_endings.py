"""Why each ended job ended, in words: done, rejected (with the operator's reason),
canceled (by whom) or lost by the farm (what happened), from its last status change."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, func, select

from mes.state.tables import job_history, users

ENDED = ("Done", "Canceled")
# How job.reject and job.lost begin the cause they record (stored: never change them).
REJECTED, LOST = "rejected: ", "print lost: "
# The causes of a plain cancel through an interface (no reason of its own).
PLAIN_CAUSES = frozenset({"", "api", "opcua", "page"})


def ending(status: str, cause: str | None, actor: str | None,
           actor_name: str | None = None) -> dict[str, Any]:
    """{kind, message, by} of a job that ended in `status` by a change with `cause` made
    by `actor` (None: the farm; no change known: it was pruned with retention), named in the
    message by `actor_name` where known."""
    if status == "Done":
        return {"kind": "done", "message": "Printed.", "by": actor}
    text = cause or ""
    named = actor_name or actor
    if text.startswith(REJECTED):
        who = f" by {named}" if actor else ""
        return {"kind": "rejected", "message": f"Rejected{who}: {text[len(REJECTED):]}",
                "by": actor}
    if text.startswith(LOST):
        return {"kind": "lost", "message": f"Lost by the farm: {text[len(LOST):]}",
                "by": actor}
    if cause is None:
        return {"kind": "canceled", "message": "Canceled.", "by": None}
    who = f"by {named}" if actor else "by the farm"
    why = "" if text in PLAIN_CAUSES else f": {text}"
    return {"kind": "canceled", "message": f"Canceled {who}{why}.", "by": actor}


def endings(conn: Connection, jobs: Collection[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ending of each ended job among `jobs`, by id (two queries), with `at` (when it
    ended) and `started_at` (when it first ran; None if it never did); both None when its
    history was pruned."""
    ended = {j["id"]: j["status"] for j in jobs if j.get("status") in ENDED}
    if not ended:
        return {}
    last = (select(func.max(job_history.c.seq).label("seq"))
            .where(job_history.c.job_id.in_(list(ended)),
                   job_history.c.to_status.in_(ENDED))
            .group_by(job_history.c.job_id).subquery())
    rows = conn.execute(select(job_history.c.job_id, job_history.c.cause, job_history.c.actor,
                               job_history.c.at)
                        .where(job_history.c.seq.in_(select(last.c.seq))))
    changes = {row.job_id: (row.cause, row.actor, row.at) for row in rows}
    actors = {actor for _, actor, _ in changes.values() if actor}
    names = dict(conn.execute(select(users.c.id, users.c.name)
                              .where(users.c.id.in_(sorted(actors)))).all()) if actors else {}
    started = dict(conn.execute(
        select(job_history.c.job_id, func.min(job_history.c.at))
        .where(job_history.c.job_id.in_(list(ended)), job_history.c.to_status == "Running")
        .group_by(job_history.c.job_id)).all())
    out = {}
    for job_id, status in ended.items():
        cause, actor, at = changes.get(job_id, (None, None, None))
        out[job_id] = {**ending(status, cause, actor, names.get(actor)), "at": at,
                       "started_at": started.get(job_id)}
    return out
