"""Paginated, filtered lists of the applied state (keyset pagination: the key of the last row
of a page is where the next page starts, so a page costs the same wherever it is)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, literal, or_, select, tuple_

from mes.state.orders import with_jobs
from mes.state.queries import printer_row
from mes.state.tables import (
    api_tokens,
    audit_log,
    filaments,
    file_owners,
    files,
    job_history,
    orders,
    print_jobs,
    printers,
    users,
)


@dataclass(frozen=True)
class JobFilter:
    """Which print jobs a list shows; None means any."""

    status: str | None = None
    printer_id: str | None = None
    filament_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    owner_id: str | None = None
    order_id: str | None = None
    # A piece of the job's id, file name, printer (asked for or sent to) or owner (id or name).
    search: str | None = None


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """`column` holds `text` anywhere, in any letter case (LIKE's wildcards are plain)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")  # type: ignore[no-any-return]


def _job_search(text: str) -> ColumnElement[bool]:
    owner_named = (select(literal(1)).where(users.c.id == print_jobs.c.owner_id,
                                            contains(users.c.name, text)).exists())
    return or_(*(contains(c, text) for c in (
        print_jobs.c.id, print_jobs.c.filepath, print_jobs.c.printer_id,
        print_jobs.c.assigned_printer_id, print_jobs.c.owner_id)), owner_named)


def _rows(conn: Connection, query: Select[Any], limit: int) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(query.limit(limit))]


def jobs_page(conn: Connection, where: JobFilter, after: tuple[float, str] | None,
              limit: int, newest_first: bool = False) -> list[dict[str, Any]]:
    """Up to `limit` jobs matching `where` in creation order (or the newest first), after
    the key `after`."""
    key = tuple_(print_jobs.c.created_at, print_jobs.c.id)
    query = select(print_jobs).order_by(
        *((print_jobs.c.created_at.desc(), print_jobs.c.id.desc()) if newest_first
          else (print_jobs.c.created_at, print_jobs.c.id)))
    if where.status is not None:
        query = query.where(print_jobs.c.status == where.status)
    if where.printer_id is not None:
        query = query.where(or_(print_jobs.c.printer_id == where.printer_id,
                                print_jobs.c.assigned_printer_id == where.printer_id))
    if where.filament_id is not None:
        query = query.where(print_jobs.c.filament_id == where.filament_id)
    if where.owner_id is not None:
        query = query.where(print_jobs.c.owner_id == where.owner_id)
    if where.order_id is not None:
        query = query.where(print_jobs.c.order_id == where.order_id)
    if where.created_after is not None:
        query = query.where(print_jobs.c.created_at >= where.created_after)
    if where.created_before is not None:
        query = query.where(print_jobs.c.created_at < where.created_before)
    if where.search:
        query = query.where(_job_search(where.search))
    if after is not None:
        query = query.where(key < tuple_(*after) if newest_first else key > tuple_(*after))
    return _rows(conn, query, limit)


def printers_page(conn: Connection, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` printers (without API keys) by id, after the id `after`."""
    query = select(printers).order_by(printers.c.id)
    if after is not None:
        query = query.where(printers.c.id > after)
    return [printer_row(r) for r in conn.execute(query.limit(limit))]


def filaments_page(conn: Connection, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` spools by id, after the id `after`."""
    query = select(filaments).order_by(filaments.c.id)
    if after is not None:
        query = query.where(filaments.c.id > after)
    return _rows(conn, query, limit)


def files_page(conn: Connection, after: tuple[float, str] | None,
               limit: int) -> list[dict[str, Any]]:
    """Up to `limit` stored files, newest first, after the key `after`."""
    query = select(files).order_by(files.c.created_at.desc(), files.c.id.desc())
    if after is not None:
        query = query.where(tuple_(files.c.created_at, files.c.id) < tuple_(*after))
    return _rows(conn, query, limit)


def owned_files_page(conn: Connection, user_id: str, after: tuple[float, str] | None,
                     limit: int) -> list[dict[str, Any]]:
    """Up to `limit` files `user_id` uploaded, their latest upload first, after the key
    `after`: each under the name they gave it (the stored name for uploads before level 7)
    and with the time of their upload."""
    uploaded = file_owners.c.created_at
    query = (select(files.c.id, func.coalesce(file_owners.c.name, files.c.name).label("name"),
                    files.c.size, uploaded.label("created_at"))
             .select_from(file_owners.join(files, files.c.id == file_owners.c.file_id))
             .where(file_owners.c.user_id == user_id)
             .order_by(uploaded.desc(), files.c.id.desc()))
    if after is not None:
        query = query.where(tuple_(uploaded, files.c.id) < tuple_(*after))
    return _rows(conn, query, limit)


def history_page(conn: Connection, job_id: str, after: int | None,
                 limit: int) -> list[dict[str, Any]]:
    """Up to `limit` status changes of a job, oldest first, after the sequence `after`."""
    query = select(job_history).where(job_history.c.job_id == job_id).order_by(job_history.c.seq)
    if after is not None:
        query = query.where(job_history.c.seq > after)
    return _rows(conn, query, limit)


def user_row(row: Any) -> dict[str, Any]:
    """A user as the API shows it: without the password hash."""
    data = dict(row._mapping)
    data["has_password"] = data.pop("password_hash", None) is not None
    return data


def user_by_id(conn: Connection, user_id: str) -> dict[str, Any] | None:
    """One user as the API shows it (without the password hash), or None."""
    row = conn.execute(users.select().where(users.c.id == user_id)).first()
    return user_row(row) if row else None


def users_page(conn: Connection, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` users by id, after the id `after`."""
    query = select(users).order_by(users.c.id)
    if after is not None:
        query = query.where(users.c.id > after)
    return [user_row(r) for r in conn.execute(query.limit(limit))]


def tokens_page(conn: Connection, user_id: str | None, after: tuple[float, str] | None,
                limit: int) -> list[dict[str, Any]]:
    """Up to `limit` tokens (of `user_id`, or everyone's) oldest first, without hashes."""
    columns = [c for c in api_tokens.c if c.name != "token_hash"]
    query = select(*columns).order_by(api_tokens.c.created_at, api_tokens.c.id)
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    if after is not None:
        query = query.where(tuple_(api_tokens.c.created_at, api_tokens.c.id) > tuple_(*after))
    return _rows(conn, query, limit)


def orders_page(conn: Connection, owner_id: str | None, after: tuple[float, str] | None,
                limit: int) -> list[dict[str, Any]]:
    """Up to `limit` orders (of `owner_id`, or everyone's) oldest first, with their jobs."""
    query = select(orders).order_by(orders.c.created_at, orders.c.id)
    if owner_id is not None:
        query = query.where(orders.c.owner_id == owner_id)
    if after is not None:
        query = query.where(tuple_(orders.c.created_at, orders.c.id) > tuple_(*after))
    return with_jobs(conn, _rows(conn, query, limit))


def audit_page(conn: Connection, actor: str | None, after: int | None,
               limit: int) -> list[dict[str, Any]]:
    """Up to `limit` audit entries (of `actor`, or everyone's), oldest first."""
    query = select(audit_log).order_by(audit_log.c.seq)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if after is not None:
        query = query.where(audit_log.c.seq > after)
    return _rows(conn, query, limit)
