"""Read functions over the applied state; used by apply and by the API (under the state lock)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, or_, select

from mes.state import prepared
from mes.state.prepared import Prepared
from mes.state.tables import (
    QUEUE_ORDER,
    QUEUE_WAITING,
    assignments,
    filaments,
    files,
    job_history,
    node_leases,
    nodes,
    orders,
    print_jobs,
    printer_status,
    printers,
)

ACTIVE_STATUSES = ("Queued", "Running")

# Built once: SQLAlchemy then skips statement construction and cache-key work per call.
_PRINTER_BY_ID = Prepared(select(printers).where(printers.c.id == bindparam("id")))
_FILAMENT_BY_ID = Prepared(select(filaments).where(filaments.c.id == bindparam("id")))
_JOB_BY_ID = Prepared(select(print_jobs).where(print_jobs.c.id == bindparam("id")))
_FILE_BY_ID = Prepared(select(files).where(files.c.id == bindparam("id")))
_PRINTERS_LOADED_WITH = Prepared(select(printers).where(printers.c.filament_id == bindparam("id")))
_STATUS_OF = Prepared(select(printer_status).where(printer_status.c.printer_id == bindparam("id")))
_ASSIGNMENT_OF = Prepared(select(assignments).where(assignments.c.printer_id == bindparam("id")))
_LEASES = Prepared(select(node_leases).order_by(node_leases.c.node))
# Exported here too: apply's handlers use it beside these lookups.
FEW = prepared.FEW


def printer_row(row: Any) -> dict[str, Any]:
    """A printer row as plain data, its API key replaced by `has_api_key`."""
    data = dict(row._mapping)
    data["has_api_key"] = bool(data.pop("api_key"))
    return data


def get_printer(conn: Connection, printer_id: str) -> dict[str, Any] | None:
    """One printer without its API key, or None."""
    row = _PRINTER_BY_ID.run(conn, {"id": printer_id}).first()
    return printer_row(row) if row else None


def list_printers(conn: Connection) -> list[dict[str, Any]]:
    """All printers without their API keys, by id."""
    return [printer_row(r) for r in conn.execute(select(printers).order_by(printers.c.id))]


def printers_with_ids(conn: Connection, ids: Collection[str]) -> list[dict[str, Any]]:
    """The printers (without their API keys) of these ids, in one query."""
    return [printer_row(r) for r in conn.execute(
        select(printers).where(printers.c.id.in_(ids)))]


def printers_named_or_loaded(conn: Connection, ids: Collection[str],
                             spools: Collection[str]) -> list[dict[str, Any]]:
    """The printers (without their API keys) of these ids or with one of these spools
    loaded, in one query."""
    if len(ids) + len(spools) <= FEW:
        rows = {r.id: r for r in _PRINTER_BY_ID.each(conn, ids)}
        for spool in spools:
            rows.update((r.id, r) for r in _PRINTERS_LOADED_WITH.run(conn, {"id": spool}))
        return [printer_row(r) for r in rows.values()]
    return [printer_row(r) for r in conn.execute(select(printers).where(
        or_(printers.c.id.in_(ids), printers.c.filament_id.in_(spools))))]


def printer_statuses(conn: Connection, printer_ids: Collection[str] | None = None,
                     ) -> dict[str, dict[str, Any]]:
    """The last status of each printer (of `printer_ids`, or all) that has one, by printer
    id, in one query."""
    if printer_ids is not None and len(printer_ids) <= FEW:
        return {r.printer_id: dict(r._mapping) for r in _STATUS_OF.each(conn, printer_ids)}
    query = select(printer_status)
    if printer_ids is not None:
        query = query.where(printer_status.c.printer_id.in_(printer_ids))
    return {r.printer_id: dict(r._mapping) for r in conn.execute(query)}


def get_filament(conn: Connection, filament_id: str) -> dict[str, Any] | None:
    """One filament spool with its reserved weight, or None."""
    row = _FILAMENT_BY_ID.run(conn, {"id": filament_id}).first()
    return dict(row._mapping) if row else None


def list_filaments(conn: Connection) -> list[dict[str, Any]]:
    """All filament spools with their reserved weights, by id."""
    return [dict(r._mapping) for r in conn.execute(select(filaments).order_by(filaments.c.id))]


def filaments_with_ids(conn: Connection, ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """The spools of these ids (missing ones left out) by id, in one query."""
    return {r.id: dict(r._mapping) for r in conn.execute(
        select(filaments).where(filaments.c.id.in_(ids)))}


def get_file(conn: Connection, file_id: str) -> dict[str, Any] | None:
    """A stored G-code file's record, or None."""
    row = _FILE_BY_ID.run(conn, {"id": file_id}).first()
    return dict(row._mapping) if row else None


def list_files(conn: Connection) -> list[dict[str, Any]]:
    """All stored G-code files, newest first."""
    query = select(files).order_by(files.c.created_at.desc())
    return [dict(r._mapping) for r in conn.execute(query)]


def file_ids(conn: Connection) -> set[str]:
    """Every file id the applied state records."""
    return {row.id for row in conn.execute(select(files.c.id))}


def list_nodes(conn: Connection) -> list[dict[str, Any]]:
    """Every node that announced its HTTP address."""
    return [dict(r._mapping) for r in conn.execute(select(nodes).order_by(nodes.c.raft_address))]


def worker_printers(conn: Connection) -> list[dict[str, Any]]:
    """Printers with a worker, including their API keys (for the workers only, never the API)."""
    query = select(printers).where(printers.c.worker.is_(True)).order_by(printers.c.id)
    return [dict(r._mapping) for r in conn.execute(query)]


def driven_printers(conn: Connection, node: str, ids: Collection[str] | None = None
                    ) -> list[dict[str, Any]]:
    """Printers (of `ids` when given) with a worker assigned to `node`, with their API keys
    (for the workers only) and their assignment (`drive_epoch`, `release`)."""
    query = (select(printers, assignments.c.epoch.label("drive_epoch"),
                    assignments.c.release.label("release"))
             .join(assignments, assignments.c.printer_id == printers.c.id)
             .where(printers.c.worker.is_(True), assignments.c.node == node)
             .order_by(printers.c.id))
    if ids is not None:
        query = query.where(printers.c.id.in_(list(ids)))
    return [dict(r._mapping) for r in conn.execute(query)]


def epochs_of_node(conn: Connection, node: str) -> dict[str, int]:
    """The assignment epoch of every printer assigned to `node`."""
    rows = conn.execute(select(assignments.c.printer_id, assignments.c.epoch)
                        .where(assignments.c.node == node))
    return {str(printer_id): int(epoch) for printer_id, epoch in rows}


def assignment_of(conn: Connection, printer_id: str) -> dict[str, Any] | None:
    """A printer's assignment (node, epoch, release), or None."""
    row = _ASSIGNMENT_OF.run(conn, {"id": printer_id}).first()
    return dict(row._mapping) if row else None


def leases(conn: Connection) -> list[dict[str, Any]]:
    """Every node's lease."""
    return [dict(r._mapping) for r in _LEASES.run(conn)]


def shard_slots(conn: Connection) -> list[dict[str, Any]]:
    """Every printer with a worker, its hub and its assignment (what the balancer plans)."""
    query = (select(printers.c.id, printers.c.hub, assignments.c.node, assignments.c.epoch,
                    assignments.c.since,
                    assignments.c.release, assignments.c.moving_to)
             .join(assignments, assignments.c.printer_id == printers.c.id)
             .where(printers.c.worker.is_(True)).order_by(printers.c.id))
    return [dict(r._mapping) for r in conn.execute(query)]


def drive_state(printer: dict[str, Any], assignment: dict[str, Any] | None,
                live: Collection[str]) -> dict[str, Any]:
    """How a printer is driven, for the API: `driven_by` (a node's Raft address, or None)
    and `drive_state`: driven, releasing (moving to another node), unassigned (waits for
    the leader to place it), unreachable (its hub has no live lease) or not_driven
    (`worker: false`)."""
    node = assignment["node"] if assignment else None
    hub = printer.get("hub")
    if not printer.get("worker"):
        state = "not_driven"
    elif node is not None and node in live:
        state = "releasing" if assignment and assignment["release"] else "driven"
    elif hub is not None and hub not in live:
        state = "unreachable"
    else:
        state = "unassigned"
    driven = node if state in ("driven", "releasing") else None
    return {"driven_by": driven, "drive_state": state,
            "drive_epoch": assignment["epoch"] if assignment and driven else None,
            "driven_since": assignment["since"] if assignment and driven else None}


def with_drive(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Printers (API rows) with `driven_by`, `drive_state` and `drive_epoch` added."""
    ids = [r["id"] for r in rows]
    if len(ids) <= FEW:
        found = {r.printer_id: dict(r._mapping) for r in _ASSIGNMENT_OF.each(conn, ids)}
    else:
        found = {r.printer_id: dict(r._mapping) for r in conn.execute(
            select(assignments).where(assignments.c.printer_id.in_(ids)))}
    live = {lease["node"] for lease in leases(conn) if not lease["expired"]}
    return [{**row, **drive_state(row, found.get(row["id"]), live)} for row in rows]


def job_row(row: Row[Any]) -> dict[str, Any]:
    """A job's row as a dict. `priority` and `queue_rank` (schema 5) are left out while they
    hold their defaults: a job is then the same value it was in earlier releases, which keep
    command results (`applied_requests`) identical on nodes of either release."""
    job = dict(row._mapping)
    if job.get("priority") == 0 and job.get("queue_rank") is None:
        del job["priority"], job["queue_rank"]
    return job


# A printer is busy with a job claimed for it (Queued, starting) or running on it.
_BUSY_WITH = (print_jobs.c.status == "Running") | (
    (print_jobs.c.status == "Queued") & (print_jobs.c.phase == "starting"))
_ACTIVE_ON = Prepared(select(print_jobs).where(
    print_jobs.c.assigned_printer_id == bindparam("id"), _BUSY_WITH))


def active_jobs_by_printer(conn: Connection, printer_ids: Collection[str] | None = None,
                           ) -> dict[str, dict[str, Any]]:
    """Per printer (of `printer_ids`, or all), the job claimed for it (starting) or running
    on it."""
    if printer_ids is not None and len(printer_ids) <= FEW:
        return {r.assigned_printer_id: job_row(r) for r in _ACTIVE_ON.each(conn, printer_ids)}
    assigned = (print_jobs.c.assigned_printer_id.is_not(None) if printer_ids is None
                else print_jobs.c.assigned_printer_id.in_(printer_ids))
    query = select(print_jobs).where(assigned, _BUSY_WITH)
    return {r.assigned_printer_id: job_row(r) for r in conn.execute(query)}


def active_job_on(conn: Connection, printer_id: str) -> dict[str, Any] | None:
    """The job a printer is claimed for or printing, if any."""
    row = _ACTIVE_ON.run(conn, {"id": printer_id}).first()
    return job_row(row) if row else None


def job_by_printer_file(conn: Connection, printer_id: str, name: str) -> dict[str, Any] | None:
    """The newest job sent to `printer_id` under the file name `name`."""
    row = conn.execute(
        select(print_jobs).where(print_jobs.c.assigned_printer_id == printer_id,
                                 print_jobs.c.printer_filename == name)
        .order_by(print_jobs.c.updated_at.desc())).first()
    return job_row(row) if row else None


def rank_of(job: dict[str, Any]) -> float:
    """A job's rank in its priority: its queue rank, or its creation time."""
    rank = job.get("queue_rank")
    return float(job["created_at"] if rank is None else rank)


def queue_key(job: dict[str, Any]) -> tuple[int, float, str]:
    """The key the queue is sorted by (ascending), as `QUEUE_ORDER` sorts in SQL."""
    return (-int(job.get("priority") or 0), rank_of(job), job["id"])


_STARTABLE = select(print_jobs).where(
    QUEUE_WAITING, print_jobs.c.file_id.is_not(None),
    print_jobs.c.approval.is_(None) | (print_jobs.c.approval != "pending"),
).order_by(*QUEUE_ORDER)


def startable_jobs(conn: Connection, ready: list[dict[str, Any]],
                   per_printer: int) -> list[dict[str, Any]]:
    """The first `per_printer` dispatchable jobs each ready printer could take, in queue
    order (`QUEUE_ORDER`: priority, then rank).

    A job can go to a printer that it names, or (naming none) to one with its spool loaded.
    A few queries whatever the number of ready printers (the scheduler asks for 1,000 idle
    printers whenever the farm changed): none past the first when nothing is dispatchable,
    one for the jobs naming any of them (numbered per printer in SQL), one per spool loaded.
    """
    if conn.execute(_STARTABLE.with_only_columns(print_jobs.c.id).limit(1)).first() is None:
        return []
    rank = func.row_number().over(partition_by=print_jobs.c.printer_id,
                                  order_by=QUEUE_ORDER)
    ranked = (_STARTABLE.add_columns(rank.label("rank"))
              .where(print_jobs.c.printer_id.in_([p["id"] for p in ready])).subquery())
    named = select(*(ranked.c[c.name] for c in print_jobs.c)).where(
        ranked.c.rank <= per_printer)
    found = {r.id: dict(r._mapping) for r in conn.execute(named)}
    for spool in {printer["filament_id"] for printer in ready}:
        match = (print_jobs.c.filament_id.is_(None) if spool is None
                 else print_jobs.c.filament_id == spool)
        query = _STARTABLE.where(print_jobs.c.printer_id.is_(None), match).limit(per_printer)
        found.update((r.id, dict(r._mapping)) for r in conn.execute(query))
    return sorted(found.values(), key=queue_key)


def printer_status_of(conn: Connection, printer_id: str) -> dict[str, Any] | None:
    """The last status the driving node's worker committed for a printer."""
    row = conn.execute(select(printer_status).where(
        printer_status.c.printer_id == printer_id)).first()
    return dict(row._mapping) if row else None


def get_job(conn: Connection, job_id: str) -> dict[str, Any] | None:
    """One print job, or None."""
    row = _JOB_BY_ID.run(conn, {"id": job_id}).first()
    return job_row(row) if row else None


def jobs_with_ids(conn: Connection, ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """The print jobs of these ids (missing ones left out) by id, in one query."""
    return {r.id: job_row(r) for r in conn.execute(
        select(print_jobs).where(print_jobs.c.id.in_(ids)))}


def owner_of(conn: Connection, entity: str, entity_id: str) -> str | None:
    """The `owner_id` of a print job (`entity` "print_job") or else of an order, or None."""
    table = print_jobs if entity == "print_job" else orders
    owner: str | None = conn.execute(
        select(table.c.owner_id).where(table.c.id == entity_id)).scalar()
    return owner


def list_jobs(conn: Connection, status: str | None = None) -> list[dict[str, Any]]:
    """Print jobs in creation order, optionally only those with `status`."""
    query = select(print_jobs).order_by(print_jobs.c.created_at, print_jobs.c.id)
    if status is not None:
        query = query.where(print_jobs.c.status == status)
    return [job_row(r) for r in conn.execute(query)]


def job_history_of(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """Every status change of a job, oldest first."""
    query = select(job_history).where(job_history.c.job_id == job_id).order_by(job_history.c.seq)
    return [dict(r._mapping) for r in conn.execute(query)]


def count_active_jobs(conn: Connection, column: str, value: str) -> int:
    """How many Queued or Running jobs have `column` == `value` (for printers: asked or given)."""
    match = print_jobs.c[column] == value
    if column == "printer_id":
        match = match | (print_jobs.c.assigned_printer_id == value)
    return int(
        conn.execute(
            select(func.count()).where(match, print_jobs.c.status.in_(ACTIVE_STATUSES))
        ).scalar_one()
    )


def owns_job_with_file(conn: Connection, owner_id: str, file_id: str) -> bool:
    """Whether a job of `owner_id` prints the stored file `file_id`."""
    return conn.execute(select(print_jobs.c.id).where(
        print_jobs.c.owner_id == owner_id, print_jobs.c.file_id == file_id).limit(1)).first() \
        is not None
