"""The state machine: apply(command) -> Outcome, snapshot() -> bytes, restore(bytes).

Nothing else changes state. Apply is deterministic: ids and timestamps come in the command,
there is no clock, randomness or I/O other than the node's own SQLite database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Connection, bindparam, delete, insert, select

from mes.state import authz, commands, migrations, notifications
from mes.state.args import Args
from mes.state.context import ApplyContext, ChangeEvent
from mes.state.database import Database, sync_sqlite_url
from mes.state.errors import DomainError, InvalidCommand, NewerData
from mes.state.prepared import Prepared
from mes.state.tables import applied_requests, audit_log, metadata
from mes.version import DATA_LEVEL, EXIT_NEWER_DATA, RELEASE

log = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = ["Outcome", "StateMachine", "sync_sqlite_url"]
Handler = Callable[[ApplyContext, Args], Any]

# Today's handler of each command (the registry, mes.state.commands, is the one place they
# are declared; apply dispatches on a command's op and format version).
HANDLERS: dict[str, Handler] = {
    op: command.formats[command.current].handler for op, command in commands.COMMANDS.items()}

_STORED_OUTCOME = Prepared(select(applied_requests.c.outcome, applied_requests.c.fingerprint)
                           .where(applied_requests.c.request_id == bindparam("rid")))
_AUDIT = Prepared(insert(audit_log))
# A key already stored is kept (its first outcome stands); never a constraint error.
_REMEMBER = Prepared(insert(applied_requests).prefix_with("OR IGNORE"))

# Request ids up to this length in plain ASCII are stored as they are; others hashed.
MAX_PLAIN_KEY = 120
_PLAIN_KEY = re.compile(r"^[\x21-\x7e]+$")
# Exit status of a node whose own database fails (sysexits' EX_IOERR).
EXIT_DATABASE_FAILED = 74
# SQLite primary result codes that mean the node's database failed, whatever the command.
_NODE_FAULTS = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN,
})

# How many request ids are remembered for deduplicating retried commands.
REQUEST_MEMORY = 50_000


@dataclass(frozen=True)
class Outcome:
    """What apply returns: a value, or an error as plain data, and the change events."""

    value: Any = None
    error: dict[str, Any] | None = None
    events: tuple[ChangeEvent, ...] = field(default_factory=tuple)
    replayed: bool = False
    # The Raft log index the command was applied at (0 when applied outside Raft).
    index: int = 0

    @property
    def ok(self) -> bool:
        """True when the command was applied."""
        return self.error is None

    def to_json(self) -> str:
        """The value and error (not events) as JSON, for the request memory."""
        return json.dumps({"value": self.value, "error": self.error})


def request_key(rid: Any) -> str | None:
    """How a request id is stored and looked up: as given when it is short plain ASCII,
    else as its SHA-256, so ids of any length or alphabet are remembered exactly."""
    if not isinstance(rid, str) or not rid:
        return None
    if len(rid) <= MAX_PLAIN_KEY and _PLAIN_KEY.match(rid):
        return rid
    digest = hashlib.sha256(rid.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"


def was_applied(conn: Connection, rid: str) -> bool:
    """Whether the request `rid` was applied (its outcome is remembered)."""
    return conn.execute(select(applied_requests.c.seq).where(
        applied_requests.c.request_id == request_key(rid))).first() is not None


def command_fingerprint(command: Mapping[str, Any]) -> str | None:
    """SHA-256 of a command's op and arguments (None if they are not plain data)."""
    try:
        text = json.dumps([command.get("op"), command.get("args")], sort_keys=True,
                          separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _op_of(command: Any) -> Any:
    return command.get("op") if isinstance(command, Mapping) else None


def _unexpected(exc: Exception) -> dict[str, Any]:
    return InvalidCommand(
        "apply_failed", f"the command could not be applied: {type(exc).__name__}").as_dict()


def _node_fault(exc: BaseException) -> bool:
    """Whether `exc` is this node's database failing (busy, I/O, full), not the command."""
    original = getattr(exc, "orig", exc)
    code = getattr(original, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _NODE_FAULTS


def format_version(command: Any) -> int | None:
    """A command's format version: `v`, or 1 for release 0.1.0's commands (they had none);
    None when `v` is not a plain integer."""
    version = command.get("v", 1) if isinstance(command, Mapping) else 1
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def stop_newer(message: str) -> NoReturn:
    """Stop rather than apply what only a newer release understands (exit status 2)."""
    log.critical("%s", message)
    logging.shutdown()
    print(f"mes: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_NEWER_DATA)


def _stop_node(exc: Exception) -> NoReturn:
    log.critical("this node's database failed while applying a command (%r); stopping "
                 "rather than diverging from the other nodes", exc)
    logging.shutdown()
    os._exit(EXIT_DATABASE_FAILED)


class StateMachine:
    """The replicated state of the farm in one SQLite database owned by this object.

    Apply writes through one connection guarded by a lock. Reads use their own connections
    on the same WAL-mode file, each in one read transaction: they see the state between two
    applied commands and never wait for apply, nor make apply wait.
    """

    def __init__(self, database_url: str = "sqlite://", scratch_dir: Path | None = None) -> None:
        self._db = Database(database_url, scratch_dir)
        self._lock = threading.RLock()
        self._conn = self._db.writer.connect()
        self._listeners: list[Callable[[Mapping[str, Any], Outcome], None]] = []
        self._restore_listeners: list[Callable[[], None]] = []
        self.applied_count = 0
        # Moved by reset, restore and every applied command declared to move the farm
        # (mes.state.commands): a reader that caches printers, jobs and assignments re-reads
        # when it moved.
        self.farm_version = 0
        self.reset()

    def reset(self) -> None:
        """Empty the database: the Raft journal and snapshot rebuild it."""
        with self._lock, self._conn.begin():
            # pysqlite commits each DDL statement alone: one transaction makes this one write.
            self._conn.exec_driver_sql("BEGIN")
            metadata.drop_all(self._conn)
            metadata.create_all(self._conn)
            migrations.set_schema(self._conn)
            self.farm_version += 1

    def add_listener(self, listener: Callable[[Mapping[str, Any], Outcome], None]) -> None:
        """Call `listener(command, outcome)` after every apply (on the applying thread)."""
        self._listeners.append(listener)

    def add_restore_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after a snapshot replaced the state (history was skipped)."""
        self._restore_listeners.append(listener)

    def apply(self, command: Mapping[str, Any], index: int = 0) -> Outcome:
        """Apply one command atomically; a rejected command changes nothing.

        `index` is the command's Raft log index, the same on every node; it is carried in
        the outcome (listeners use it as the change events' position in the farm's history).

        Never raises: an exception escaping apply would make pysyncobj retry the same log
        entry forever on every node. Every failure becomes a deterministic rejection.
        """
        version = format_version(command)
        if version is not None and version > DATA_LEVEL:
            stop_newer(f"the Raft log holds a command {_op_of(command)!r} of format level "
                        f"{version}, written by a newer release; this node ({RELEASE}) "
                        f"applies up to level {DATA_LEVEL}. Upgrade this node.")
        with self._lock:
            outcome = self._apply_locked(command, index)
            if index:
                outcome = replace(outcome, index=index)
            self.applied_count += 1
            if commands.moves_farm(_op_of(command)):
                self.farm_version += 1
        for listener in self._listeners:
            try:
                listener(command, outcome)
            except Exception:
                log.exception("a change listener failed on %r", _op_of(command))
        return outcome

    def _apply_locked(self, command: Mapping[str, Any], index: int = 0) -> Outcome:
        try:
            return self._apply_remembered(command, index)
        except Exception as exc:
            # Last resort: the request memory itself failed. Undo whatever was begun.
            with contextlib.suppress(Exception):
                self._conn.rollback()
            log.error("command %r rejected while remembering its request: %r",
                      _op_of(command), exc)
            return Outcome(error=_unexpected(exc))

    def _apply_remembered(self, command: Mapping[str, Any], index: int) -> Outcome:
        key = request_key(command.get("rid") if isinstance(command, Mapping) else None)
        fingerprint = command_fingerprint(command) if key is not None else None
        if key is not None:
            stored = _STORED_OUTCOME.run(self._conn, {"rid": key}).first()
            self._conn.rollback()
            if stored is not None:
                if stored.fingerprint not in (None, fingerprint):
                    return Outcome(error=InvalidCommand(
                        "idempotency_key_reused", "this Idempotency-Key was already used for "
                        "a different request", "idempotency-key").as_dict())
                data = json.loads(stored.outcome)
                return Outcome(value=data["value"], error=data["error"], replayed=True)
        try:
            with self._conn.begin():
                ctx, value = self._dispatch(command, index)
                outcome = Outcome(value=value, events=tuple(ctx.events))
                if key is not None:
                    self._remember(key, fingerprint, outcome)
            return outcome
        except DomainError as exc:
            outcome = Outcome(error=exc.as_dict())
        except NewerData as exc:
            stop_newer(str(exc))
        except Exception as exc:
            if _node_fault(exc):
                # Not the command's fault but this node's (disk, lock): rejecting it here
                # while other nodes apply it would diverge. Stop; it rebuilds at restart.
                _stop_node(exc)
            # The same command fails the same way on every node, so rejecting it keeps the
            # nodes identical.
            log.error("command %r rejected by an unexpected error: %r", _op_of(command), exc)
            outcome = Outcome(error=_unexpected(exc))
        if key is not None:
            with self._conn.begin():
                self._remember(key, fingerprint, outcome)
        return outcome

    def _dispatch(self, command: Mapping[str, Any], index: int) -> tuple[ApplyContext, Any]:
        if not isinstance(command, Mapping):
            raise InvalidCommand("invalid_command", "a command must be a mapping")
        op = command.get("op")
        version = format_version(command)
        understood = commands.format_of(op, version) if version is not None else None
        if understood is None:
            # Never silent: a command this code cannot give a meaning to is a bug or damage.
            log.error("rejected a command this release cannot understand: op %r, format "
                      "version %r", op, command.get("v", 1))
            if commands.declared(op) is None:
                raise InvalidCommand("unknown_op", f"unknown command {op!r}", "op")
            raise InvalidCommand("unknown_format", f"command {op!r} has no format version "
                                 f"{command.get('v', 1)!r}", "v")
        handler = understood.handler
        ts = command.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or ts < 0:
            raise InvalidCommand("invalid_timestamp", "a command needs a timestamp", "ts")
        actor = command.get("actor")
        if actor is not None and not isinstance(actor, str):
            raise InvalidCommand("invalid_actor", "a command's actor is a user id", "actor")
        ctx = ApplyContext(conn=self._conn, ts=float(ts), actor=actor, index=index)
        args = Args(command.get("args", {}))
        authz.check(ctx, str(op), args)
        value = handler(ctx, args)
        notifications.derive(ctx, str(op), args)
        if actor is not None:
            target = args.raw("id")
            _AUDIT.run(self._conn, {"at": ctx.ts, "actor": actor, "op": op, "target": (
                target if isinstance(target, str) and len(target) <= 64 else None)})
        return ctx, value

    def _remember(self, key: str, fingerprint: str | None, outcome: Outcome) -> None:
        stored = _REMEMBER.run(self._conn, {"request_id": key, "fingerprint": fingerprint,
                                            "outcome": outcome.to_json()})
        seq = stored.lastrowid if stored.rowcount == 1 else None
        if seq is not None and seq % 1000 == 0:
            self._conn.execute(
                delete(applied_requests).where(applied_requests.c.seq <= seq - REQUEST_MEMORY))

    def read(self, query: Callable[[Connection], T]) -> T:
        """Run a read-only query in one read transaction on a reader connection.

        It sees one applied state throughout, takes no lock that apply needs, and may run
        on any thread (the API runs it off the event loop).
        """
        with self._db.readers.connect() as conn, conn.begin():
            return query(conn)

    def snapshot(self) -> bytes:
        """The whole database as bytes (SQLite's serialization, as a rollback-mode image)."""
        with self._lock:
            self._conn.rollback()
            return self._db.image(self._sqlite())

    def restore(self, image: bytes) -> None:
        """Replace the whole database with a snapshot image, through SQLite's backup API,
        and migrate it to this release's schema (mes.state.migrations).

        Readers see the restored state from their next read transaction on, migrated: the
        image is migrated in memory before it replaces the database.
        """
        with migrations.migrated(image) as source, self._lock:
            self._conn.rollback()
            source.backup(self._sqlite())
            self.farm_version += 1  # everything may have changed
        for listener in self._restore_listeners:
            try:
                listener()
            except Exception:
                log.exception("a restore listener failed")

    def _sqlite(self) -> sqlite3.Connection:
        raw = self._conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        return raw

    def close(self) -> None:
        """Release the database and remove its scratch file."""
        with self._lock:
            self._conn.close()
            self._db.close()
