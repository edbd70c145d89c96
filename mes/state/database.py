"""The node's SQLite database: one writer connection for apply, a pool of reader connections.

The database is a file in WAL mode, so a reader's transaction keeps its own consistent view
while apply commits beside it: neither waits for the other. An in-memory DATABASE_URL (the
default) becomes a scratch file that is emptied at every start, so the state is still
rebuilt from the Raft journal and snapshot each time; its data never outlives the process.
In-memory alternatives were measured and rejected: a shared cache locks whole tables (a
writer fails with "table is locked" while any reader is on the table), and the memdb VFS
has no WAL, so a reader's transaction blocks every commit.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool, StaticPool

SCRATCH_NAME = "applied-state.sqlite"
# Reader connections kept open; more are opened (and closed after use) under a burst.
READER_POOL = 8
READER_OVERFLOW = 24


def sync_sqlite_url(database_url: str) -> str:
    """The synchronous SQLAlchemy URL for a DATABASE_URL such as `sqlite+aiosqlite://`."""
    scheme, rest = database_url.split("://", 1)
    return f"sqlite://{rest}" if scheme.startswith("sqlite") else database_url


def is_in_memory(database_url: str) -> bool:
    """Whether a DATABASE_URL names an in-memory SQLite database."""
    url = make_url(sync_sqlite_url(database_url))
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


class Database:
    """The SQLite file of one state machine and its two engines (writer, readers)."""

    def __init__(self, database_url: str, scratch_dir: Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if is_in_memory(database_url):
            if scratch_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="mes-state-")
                scratch_dir = Path(self._tmp.name)
            scratch_dir.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = scratch_dir / SCRATCH_NAME
            remove_database_files(self.path)
            url = f"sqlite:///{self.path}"
            self._scratch = True
        else:
            url = sync_sqlite_url(database_url)
            self.path = None
            self._scratch = False
        # hide_parameters: an SQL error's text (which may be logged) never carries row values
        # such as a printer's API key
        self.writer: Engine = create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False},
            hide_parameters=True)
        event.listen(self.writer, "connect", _configure_writer)
        self.readers: Engine = create_engine(
            url, poolclass=QueuePool, pool_size=READER_POOL, max_overflow=READER_OVERFLOW,
            pool_timeout=30, connect_args={"check_same_thread": False}, hide_parameters=True)
        event.listen(self.readers, "connect", _configure_reader)
        event.listen(self.readers, "begin", _begin_read)
        self._finalizer = weakref.finalize(
            self, _release, self.writer, self.readers, self.path if self._scratch else None,
            self._tmp)

    @staticmethod
    def image(raw: sqlite3.Connection) -> bytes:
        """The database as bytes, marked as a rollback-journal database.

        An image marked WAL cannot be opened in memory; the mark is all that differs.
        """
        data = bytearray(raw.serialize())
        if len(data) >= 20 and data[18] == 2 and data[19] == 2:
            data[18] = data[19] = 1
        return bytes(data)

    def close(self) -> None:
        """Close every connection and remove a scratch file."""
        self._finalizer()


def remove_database_files(path: Path) -> None:
    """Delete an SQLite file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _release(writer: Engine, readers: Engine, scratch: Path | None,
             tmp: tempfile.TemporaryDirectory[str] | None) -> None:
    readers.dispose()
    writer.dispose()
    if scratch is not None:
        remove_database_files(scratch)
    if tmp is not None:
        tmp.cleanup()


def _configure_writer(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # The file is rebuilt from Raft at every start: it never needs to survive a crash.
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _configure_reader(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy then leaves transactions to us: `_begin_read` opens one per read.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _begin_read(conn: Connection) -> None:
    # pysqlite sends no BEGIN before a SELECT: without this each statement of a read would
    # see its own state. Sent on the DBAPI connection: through SQLAlchemy it cost a short
    # read (a job's hold) a third of its time.
    conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]
