"""Retention: the `retention.prune` command deletes finished jobs, their traces and old audit
entries, in bounded batches, so that a farm that runs for years keeps a bounded state.

The cutoffs are in the command (chosen by the leader from its clock), so every node deletes
exactly the same rows. One command deletes at most `limit` rows of each kind and says
whether more remain; the leader repeats it until none do.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, exists, select

from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand
from mes.state.tables import audit_log, files, job_history, orders, print_jobs

# Statuses a job never leaves: only these are pruned.
FINISHED = ("Done", "Canceled")
# The most rows of each kind one command deletes (so that one apply stays short).
MAX_BATCH = 1000


def _old_jobs(before: float, limit: int) -> Any:
    """Finished jobs whose last change (their end) is older than `before`, oldest first."""
    return (select(print_jobs.c.id, print_jobs.c.order_id, print_jobs.c.file_id)
            .where(print_jobs.c.status.in_(FINISHED), print_jobs.c.updated_at < before)
            .order_by(print_jobs.c.updated_at, print_jobs.c.id).limit(limit))


def _unreferenced_files(before: float, limit: int) -> Any:
    """Files recorded before `before` that no remaining job prints."""
    used = exists().where(print_jobs.c.file_id == files.c.id)
    return (select(files.c.id).where(files.c.created_at < before, ~used)
            .order_by(files.c.created_at, files.c.id).limit(limit))


def _old_audit(before: float, limit: int) -> Any:
    return (select(audit_log.c.seq).where(audit_log.c.at < before)
            .order_by(audit_log.c.at, audit_log.c.seq).limit(limit))


def _empty_orders(ids: set[str]) -> Any:
    has_job = exists().where(print_jobs.c.order_id == orders.c.id)
    return select(orders.c.id).where(orders.c.id.in_(sorted(ids)), ~has_job).order_by(orders.c.id)


def _cutoff(args: Args, name: str) -> float | None:
    value = args.raw(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise InvalidCommand("invalid_cutoff", f"{name} must be a timestamp (seconds) or null",
                             name)
    return float(value)


def prune(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Delete up to `limit` finished jobs that ended before `jobs_before` (with their history,
    their orders once empty, and the file records no remaining job prints that were made
    before that time) and up to `limit` audit entries made before `audit_before`.

    A null cutoff keeps that kind forever. Returns the counts and `more`: whether a further
    command would find more to delete.
    """
    args.reject_unknown(("jobs_before", "audit_before", "limit"))
    jobs_before = _cutoff(args, "jobs_before")
    audit_before = _cutoff(args, "audit_before")
    limit = args.integer("limit", 1, MAX_BATCH)
    conn = ctx.conn
    counts = {"jobs": 0, "orders": 0, "files": 0, "audit": 0}
    more = False
    if jobs_before is not None:
        rows = conn.execute(_old_jobs(jobs_before, limit)).all()
        ids = [r.id for r in rows]
        if ids:
            conn.execute(delete(job_history).where(job_history.c.job_id.in_(ids)))
            conn.execute(delete(print_jobs).where(print_jobs.c.id.in_(ids)))
            for job_id in ids:
                ctx.changed("print_job", job_id, "deleted")
        counts["jobs"] = len(ids)
        order_ids = {r.order_id for r in rows if r.order_id is not None}
        gone = [r.id for r in conn.execute(_empty_orders(order_ids))] if order_ids else []
        if gone:
            conn.execute(delete(orders).where(orders.c.id.in_(gone)))
            for order_id in gone:
                ctx.changed("order", order_id, "deleted")
        counts["orders"] = len(gone)
        file_ids = [r.id for r in conn.execute(_unreferenced_files(jobs_before, limit))]
        if file_ids:
            conn.execute(delete(files).where(files.c.id.in_(file_ids)))
            for file_id in file_ids:
                ctx.changed("file", file_id, "deleted")
        counts["files"] = len(file_ids)
        more = len(ids) == limit or len(file_ids) == limit
    if audit_before is not None:
        seqs = [r.seq for r in conn.execute(_old_audit(audit_before, limit))]
        if seqs:
            conn.execute(delete(audit_log).where(audit_log.c.seq.in_(seqs)))
        counts["audit"] = len(seqs)
        more = more or len(seqs) == limit
    return {**counts, "more": more}


def pending(conn: Connection, jobs_before: float | None, audit_before: float | None) -> bool:
    """Whether a prune with these cutoffs would delete anything (a cheap read first)."""
    checks = []
    if jobs_before is not None:
        checks += [_old_jobs(jobs_before, 1), _unreferenced_files(jobs_before, 1)]
    if audit_before is not None:
        checks.append(_old_audit(audit_before, 1))
    return any(conn.execute(query).first() is not None for query in checks)
