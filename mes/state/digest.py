"""A digest of the whole applied state, to compare nodes at the same applied index."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, Table, select

from mes.state.tables import metadata


def state_digest(conn: Connection) -> str:
    """SHA-256 over every replicated table's name, columns and rows, in a canonical order.

    Tables are taken by name and rows by primary key (all columns when a table has none),
    each row encoded as canonical JSON, so two nodes with the same state give the same digest.
    """
    sha = hashlib.sha256()
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        _hash_table(sha, conn, table)
    return sha.hexdigest()


def _hash_table(sha: Any, conn: Connection, table: Table) -> None:
    columns = list(table.columns)
    order = list(table.primary_key.columns) or columns
    sha.update(json.dumps([table.name, [c.name for c in columns]]).encode())
    sha.update(b"\n")
    for row in conn.execute(select(*columns).order_by(*order)):
        sha.update(json.dumps([_plain(v) for v in row], separators=(",", ":"),
                              ensure_ascii=True).encode())
        sha.update(b"\n")


def _plain(value: Any) -> Any:
    """A JSON-encodable, type-preserving form of one column value."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"hex": bytes(value).hex()}
    if isinstance(value, float):
        return {"float": value.hex()}
    return value
