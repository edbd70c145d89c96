"""The state machine: apply(command) -> Outcome, snapshot() -> bytes, restore(bytes).

Nothing else changes state. Apply is deterministic: ids and timestamps come in the command,
there is no clock, randomness or I/O other than the node's own SQLite database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, create_engine, delete, event, insert, select
from sqlalchemy.pool import StaticPool

from mes.state import farm, filaments, jobs, printers, stored_files
from mes.state.args import Args
from mes.state.context import ApplyContext, ChangeEvent
from mes.state.errors import DomainError, InvalidCommand
from mes.state.tables import applied_requests, metadata

log = logging.getLogger(__name__)
T = TypeVar("T")
Handler = Callable[[ApplyContext, Args], Any]

HANDLERS: dict[str, Handler] = {
    "printer.create": printers.create,
    "printer.update": printers.update_,
    "printer.delete": printers.delete_,
    "filament.create": filaments.create,
    "filament.update": filaments.update_,
    "filament.delete": filaments.delete_,
    "job.create": jobs.create,
    "job.set_status": jobs.set_status,
    "file.register": stored_files.register,
    "node.announce": stored_files.announce_node,
    "leader.begin": farm.begin_epoch,
    "job.claim": farm.claim,
    "job.started": farm.started,
    "job.sending": farm.sending,
    "job.start_failed": farm.start_failed,
    "job.finished": farm.finished,
    "job.lost": farm.lost,
    "job.phase": farm.set_phase,
    "job.external": farm.external,
    "job.request": farm.request_action,
    "printer.bed_cleared": farm.bed_cleared,
    "printer.attention": farm.needs_attention,
    "printer.reserve": farm.reserve,
    "printer.release": farm.release,
    "printer.telemetry": farm.telemetry,
    "noop": lambda ctx, args: None,
}

_STORED_OUTCOME = select(applied_requests.c.outcome).where(
    applied_requests.c.request_id == bindparam("rid"))
_REMEMBER = insert(applied_requests)

# How many request ids are remembered for deduplicating retried commands.
REQUEST_MEMORY = 50_000


@dataclass(frozen=True)
class Outcome:
    """What apply returns: a value, or an error as plain data, and the change events."""

    value: Any = None
    error: dict[str, Any] | None = None
    events: tuple[ChangeEvent, ...] = field(default_factory=tuple)
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """True when the command was applied."""
        return self.error is None

    def to_json(self) -> str:
        """The value and error (not events) as JSON, for the request memory."""
        return json.dumps({"value": self.value, "error": self.error})


def sync_sqlite_url(database_url: str) -> str:
    """The synchronous SQLAlchemy URL for a DATABASE_URL such as `sqlite+aiosqlite://`."""
    scheme, rest = database_url.split("://", 1)
    return f"sqlite://{rest}" if scheme.startswith("sqlite") else database_url


class StateMachine:
    """The replicated state of the farm in one SQLite database owned by this object.

    One connection serves apply and reads alike, guarded by a lock, so an in-memory
    database works and every read sees a state between two applied commands.
    """

    def __init__(self, database_url: str = "sqlite://") -> None:
        self._engine = create_engine(
            sync_sqlite_url(database_url),
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
        event.listen(self._engine, "connect", _configure_connection)
        self._lock = threading.RLock()
        self._conn = self._engine.connect()
        self._listeners: list[Callable[[Mapping[str, Any], Outcome], None]] = []
        self.applied_count = 0
        self.reset()

    def reset(self) -> None:
        """Empty the database: the Raft journal and snapshot rebuild it."""
        with self._lock, self._conn.begin():
            metadata.drop_all(self._conn)
            metadata.create_all(self._conn)

    def add_listener(self, listener: Callable[[Mapping[str, Any], Outcome], None]) -> None:
        """Call `listener(command, outcome)` after every apply (on the applying thread)."""
        self._listeners.append(listener)

    def apply(self, command: Mapping[str, Any]) -> Outcome:
        """Apply one command atomically; a rejected command changes nothing."""
        with self._lock:
            outcome = self._apply_locked(command)
            self.applied_count += 1
        for listener in self._listeners:
            listener(command, outcome)
        return outcome

    def _apply_locked(self, command: Mapping[str, Any]) -> Outcome:
        request_id = command.get("rid") if isinstance(command, Mapping) else None
        if request_id is not None and not isinstance(request_id, str):
            request_id = None
        if request_id:
            stored = self._conn.execute(_STORED_OUTCOME, {"rid": request_id}).scalar()
            self._conn.rollback()
            if stored is not None:
                data = json.loads(stored)
                return Outcome(value=data["value"], error=data["error"], replayed=True)
        try:
            with self._conn.begin():
                ctx, value = self._dispatch(command)
                outcome = Outcome(value=value, events=tuple(ctx.events))
                if request_id:
                    self._remember(request_id, outcome)
            return outcome
        except DomainError as exc:
            outcome = Outcome(error=exc.as_dict())
        except Exception as exc:
            # Never let a command stop the log: an exception escaping apply would be retried
            # forever on every node. The same command fails the same way everywhere, so
            # rejecting it keeps the nodes identical.
            log.error("command %r rejected by an unexpected error: %r", command.get("op"), exc)
            outcome = Outcome(error=InvalidCommand(
                "apply_failed", f"the command could not be applied: {type(exc).__name__}"
            ).as_dict())
        if request_id:
            with self._conn.begin():
                self._remember(request_id, outcome)
        return outcome

    def _dispatch(self, command: Mapping[str, Any]) -> tuple[ApplyContext, Any]:
        if not isinstance(command, Mapping):
            raise InvalidCommand("invalid_command", "a command must be a mapping")
        op = command.get("op")
        handler = HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise InvalidCommand("unknown_op", f"unknown command {op!r}", "op")
        ts = command.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or ts < 0:
            raise InvalidCommand("invalid_timestamp", "a command needs a timestamp", "ts")
        ctx = ApplyContext(conn=self._conn, ts=float(ts))
        value = handler(ctx, Args(command.get("args", {})))
        return ctx, value

    def _remember(self, request_id: str, outcome: Outcome) -> None:
        seq = self._conn.execute(
            _REMEMBER, {"request_id": request_id[:128], "outcome": outcome.to_json()}
        ).inserted_primary_key
        if seq is not None and seq[0] % 1000 == 0:
            self._conn.execute(
                delete(applied_requests).where(applied_requests.c.seq <= seq[0] - REQUEST_MEMORY))

    def read(self, query: Callable[[Connection], T]) -> T:
        """Run a read-only query against a consistent applied state."""
        with self._lock:
            try:
                return query(self._conn)
            finally:
                self._conn.rollback()

    def snapshot(self) -> bytes:
        """The whole database as bytes (SQLite's serialization)."""
        with self._lock:
            self._conn.rollback()
            raw = self._sqlite()
            return bytes(raw.serialize())

    def restore(self, image: bytes) -> None:
        """Replace the whole database with a snapshot image, through SQLite's backup API."""
        source = sqlite3.connect(":memory:")
        try:
            source.deserialize(image)
            with self._lock:
                self._conn.rollback()
                source.backup(self._sqlite())
        finally:
            source.close()

    def _sqlite(self) -> sqlite3.Connection:
        raw = self._conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        return raw

    def close(self) -> None:
        """Release the database."""
        with self._lock:
            self._conn.close()
            self._engine.dispose()


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.close()
