"""Per-user quotas: what one `user` (not an operator or admin) may hold at once.

Checked by the application layer against the committed state before a write is submitted,
so a client is told at once which quota it reached (429 `quota_exceeded`). A request that
was already applied (a retry with the same Idempotency-Key) is never refused: its stored
outcome answers it. Concurrent requests of one user may overshoot a quota by the number in
flight; the quotas bound what a user can pile up, they are not invariants of the state.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from mes.config_groups import QuotaSettings
from mes.state.stored_files import owns_file
from mes.state.usage import live_tokens, open_orders, unfinished_jobs, uploaded_bytes

# A check: the message naming the quota a user has reached, or None.
Check = Callable[[Connection, str], str | None]


def _reached(setting: str, limit: int, used: int, what: str, adding: int = 1) -> str | None:
    if limit <= 0 or used + adding <= limit:
        return None
    return (f"quota {setting} reached: you have {used} {what} and may have at most {limit}"
            + (f"; this request adds {adding}" if adding > 1 else ""))


def jobs_quota(settings: QuotaSettings, adding: int = 1) -> Check:
    """QUOTA_JOBS: jobs a user has waiting or printing."""
    return lambda conn, user_id: _reached(
        "QUOTA_JOBS", settings.jobs, unfinished_jobs(conn, user_id),
        "jobs waiting or printing", adding)


def order_quota(settings: QuotaSettings, jobs: int) -> Check:
    """QUOTA_ORDERS (open orders), and QUOTA_JOBS for the order's `jobs`."""
    def check(conn: Connection, user_id: str) -> str | None:
        return _reached("QUOTA_ORDERS", settings.orders, open_orders(conn, user_id),
                        "open orders") or jobs_quota(settings, jobs)(conn, user_id)
    return check


def token_quota(settings: QuotaSettings) -> Check:
    """QUOTA_TOKENS: a user's live API tokens."""
    return lambda conn, user_id: _reached(
        "QUOTA_TOKENS", settings.tokens, live_tokens(conn, user_id), "API tokens")


def upload_quota(settings: QuotaSettings, sha: str, size: int) -> Check:
    """QUOTA_UPLOAD_MB: stored bytes a user uploaded (content they uploaded before is free)."""
    def check(conn: Connection, user_id: str) -> str | None:
        limit = settings.upload_mb * 2**20
        if limit <= 0 or owns_file(conn, user_id, sha):
            return None
        used = uploaded_bytes(conn, user_id)
        if used + size <= limit:
            return None
        return (f"quota QUOTA_UPLOAD_MB reached: your stored uploads take "
                f"{used / 2**20:.1f} MiB, this file {size / 2**20:.1f} MiB, and you may store "
                f"at most {settings.upload_mb} MiB; delete jobs or ask an operator")
    return check
