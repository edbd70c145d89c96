"""What one user holds now (named queries of the quotas in `mes/app/quotas.py`)."""

from __future__ import annotations

import time

from sqlalchemy import Connection, exists, func, select

from mes.state.tables import api_tokens, file_owners, files, orders, print_jobs
from mes.state.users import SESSION_TOKEN_NAME

UNFINISHED = ("Queued", "Running")


def unfinished_jobs(conn: Connection, user_id: str) -> int:
    """Jobs of `user_id` waiting or printing."""
    return int(conn.execute(select(func.count()).select_from(print_jobs).where(
        print_jobs.c.owner_id == user_id, print_jobs.c.status.in_(UNFINISHED))).scalar_one())


def open_orders(conn: Connection, user_id: str) -> int:
    """Orders of `user_id` with a job waiting or printing."""
    unfinished = exists().where(print_jobs.c.order_id == orders.c.id,
                                print_jobs.c.status.in_(UNFINISHED))
    return int(conn.execute(select(func.count()).select_from(orders).where(
        orders.c.owner_id == user_id, unfinished)).scalar_one())


def live_tokens(conn: Connection, user_id: str) -> int:
    """API tokens of `user_id` neither revoked nor expired (web sessions not counted)."""
    now = time.time()
    return int(conn.execute(select(func.count()).select_from(api_tokens).where(
        api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None),
        api_tokens.c.name != SESSION_TOKEN_NAME,
        (api_tokens.c.expires_at.is_(None)) | (api_tokens.c.expires_at > now))).scalar_one())


def uploaded_bytes(conn: Connection, user_id: str) -> int:
    """Bytes of the stored files `user_id` uploaded."""
    return int(conn.execute(select(func.coalesce(func.sum(files.c.size), 0)).select_from(
        files.join(file_owners, file_owners.c.file_id == files.c.id)).where(
        file_owners.c.user_id == user_id)).scalar_one())
