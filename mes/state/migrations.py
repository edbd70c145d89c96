"""Ordered migrations of the SQLite image, from any older schema to this release's.

The schema an image has is SQLite's `user_version`: 0 in images of release 0.1.0 and before
(schema 1 then), `SCHEMA` in images this release writes. Each migration is a function of
the connection, deterministic, and runs inside the restore's transaction, so every node
that restores the same image holds the same database after it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, create_engine, insert, select
from sqlalchemy.pool import StaticPool

from mes.state import shards
from mes.state.tables import (
    QUEUE_INDEXES,
    audit_log,
    cluster_version,
    file_owners,
    files,
    metadata,
    node_versions,
)
from mes.version import SCHEMA

log = logging.getLogger(__name__)
Migration = Callable[[Connection], None]


def _to_schema_1(conn: Connection) -> None:
    """Release 0.1.0's tables (images from before it lacked some): printers get their hub
    column and an assignment to nobody."""
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables
                                      if t.name not in ("node_versions", "cluster_version",
                                                                     "file_owners")])
    shards.upgrade(conn)


def _to_schema_2(conn: Connection) -> None:
    """Node versions and the cluster version (no rows: the cluster is at level 1)."""
    node_versions.create(conn, checkfirst=True)
    cluster_version.create(conn, checkfirst=True)



def _to_schema_3(conn: Connection) -> None:
    """Who uploaded each file, from the audit entries of `file.register` still kept (older
    uploads are known only through the jobs that print them)."""
    file_owners.create(conn, checkfirst=True)
    registered = "file.register"  # wire format: the op as audit rows stored it
    known = select(audit_log.c.target, audit_log.c.actor, audit_log.c.at).where(
        audit_log.c.op == registered, audit_log.c.target.in_(select(files.c.id))
    ).order_by(audit_log.c.seq)
    seen: set[tuple[str, str]] = set()
    for file_id, user_id, at in conn.execute(known):
        if (file_id, user_id) not in seen:
            seen.add((file_id, user_id))
            conn.execute(insert(file_owners).values(file_id=file_id, user_id=user_id,
                                                    created_at=at))


def _to_schema_4(conn: Connection) -> None:
    """Nodes gain their OPC UA endpoint (null until they announce it at level 6)."""
    if "opcua_url" not in _columns(conn, "nodes"):
        conn.exec_driver_sql("ALTER TABLE nodes ADD COLUMN opcua_url VARCHAR(300)")


def _columns(conn: Connection, table: str) -> set[str]:
    return {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")}


def _to_schema_5(conn: Connection) -> None:
    """Jobs gain a priority (0) and a queue rank (null: by creation time), the scheduler's
    indexes follow the queue's order, and owners keep their own name for a file (null for
    uploads before level 7). Older readers ignore the columns; their inserts get the
    defaults."""
    jobs = _columns(conn, "print_jobs")
    if "priority" not in jobs:
        conn.exec_driver_sql("ALTER TABLE print_jobs ADD COLUMN priority INTEGER NOT NULL "
                             "DEFAULT 0")
    if "queue_rank" not in jobs:
        conn.exec_driver_sql("ALTER TABLE print_jobs ADD COLUMN queue_rank FLOAT")
    if "name" not in _columns(conn, "file_owners"):
        conn.exec_driver_sql("ALTER TABLE file_owners ADD COLUMN name VARCHAR(255)")
    for index in QUEUE_INDEXES:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
        index.create(conn)


# MIGRATIONS[n] takes an image of schema n to schema n + 1.
MIGRATIONS: dict[int, Migration] = {0: _to_schema_1, 1: _to_schema_2, 2: _to_schema_3,
                                    3: _to_schema_4, 4: _to_schema_5}


def schema_of(conn: Connection) -> int:
    """The schema of the database on `conn` (SQLite's user_version)."""
    value = conn.exec_driver_sql("PRAGMA user_version").scalar()
    return int(value or 0)


def set_schema(conn: Connection, schema: int = SCHEMA) -> None:
    """Record `schema` in the database (SQLite's user_version)."""
    conn.exec_driver_sql(f"PRAGMA user_version = {int(schema)}")


def migrate(conn: Connection) -> int:
    """Bring the database on `conn` to SCHEMA; returns the schema it had.

    An image of a newer schema is left as it is: whether this code may read it was decided
    before (the snapshot's `min_reader`), and a newer image only adds what this code ignores.
    """
    found = schema_of(conn)
    schema = found
    while schema < SCHEMA:
        MIGRATIONS[schema](conn)
        schema += 1
    if found < SCHEMA:
        # 0.1.0's images say 0: they hold schema 1, and the first step is harmless on them.
        log.info("migrated a snapshot of schema %d to schema %d", max(found, 1), SCHEMA)
        set_schema(conn)
    return found


@contextlib.contextmanager
def migrated(image: bytes) -> Iterator[sqlite3.Connection]:
    """An in-memory database holding `image` migrated to SCHEMA (closed on leaving)."""
    source = sqlite3.connect(":memory:", check_same_thread=False)
    engine = create_engine("sqlite://", creator=lambda: source, poolclass=StaticPool)
    try:
        source.deserialize(image)
        with engine.connect() as conn, conn.begin():
            migrate(conn)
        yield source
    finally:
        engine.dispose()
        source.close()
