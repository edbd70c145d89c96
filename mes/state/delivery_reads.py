"""Reads of the deliveries outbox: what the leader's delivery loop sends next, and pages of
deliveries as the API lists them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from mes.state.tables import deliveries, webhooks


def due_deliveries(conn: Connection, now: float, limit: int) -> list[dict[str, Any]]:
    """Pending deliveries whose next attempt is due, oldest first, with their secrets."""
    query = (select(deliveries, webhooks.c.secret)
             .outerjoin(webhooks, webhooks.c.id == deliveries.c.webhook_id)
             .where(deliveries.c.status == "pending", deliveries.c.next_at <= now)
             .order_by(deliveries.c.next_at, deliveries.c.seq).limit(limit))
    return [dict(r._mapping) for r in conn.execute(query)]


def deliveries_page(conn: Connection, webhook_id: str | None, kind: str | None,
                    status: str | None, before: int | None, count: int) -> list[dict[str, Any]]:
    """Up to `count` deliveries newest first (before `seq` `before`), payloads decoded and
    `next_at` only on pending ones."""
    query = select(deliveries).order_by(deliveries.c.seq.desc()).limit(count)
    if webhook_id is not None:
        query = query.where(deliveries.c.webhook_id == webhook_id)
    if kind is not None:
        query = query.where(deliveries.c.kind == kind)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    if before is not None:
        query = query.where(deliveries.c.seq < before)
    rows = []
    for row in conn.execute(query):
        data = dict(row._mapping)
        data["payload"] = json.loads(data["payload"])
        if data["status"] != "pending":
            data["next_at"] = None
        rows.append(data)
    return rows
