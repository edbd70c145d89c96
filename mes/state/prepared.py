"""Statements compiled once and run straight on SQLite's own connection.

SQLAlchemy Core spends about 100 µs on the test machine setting up each execution (cache
key, execution context, result object) against 10-20 µs in SQLite itself; apply runs nine
or more statements per command on every node. A `Prepared` statement is compiled once per
set of parameter names, with SQLAlchemy's own bind and result conversions (booleans, for
example), so its rows are the values SQLAlchemy would have given: the same state and the
same outcomes on every node, whichever path ran a statement.

It runs on the DBAPI connection under an SQLAlchemy `Connection`, inside whatever
transaction that connection has open (pysqlite begins one before the first write, as it
does for SQLAlchemy's own statements).
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_DIALECT = sqlite_dialect.dialect()
# Up to this many ids, a lookup runs one prepared statement per id instead of one IN query
# (an IN list cannot be prepared): cheaper while they are few, about 30 µs each against
# 250 µs for the IN query through SQLAlchemy.
FEW = 8
Processor = Callable[[Any], Any] | None


class _Form:
    """One compiled form of a statement: its SQL, parameter order and conversions."""

    __slots__ = ("binds", "compiled", "defaults", "keys", "names", "plain_binds", "results",
                 "row_type", "sql")

    def __init__(self, statement: ClauseElement, keys: tuple[str, ...]) -> None:
        self.keys = keys
        compiled = statement.compile(dialect=_DIALECT, column_keys=list(keys) or None)
        assert isinstance(compiled, SQLCompiler)
        if any(b.expanding for b in compiled.binds.values()):
            raise ValueError("an expanding (IN) parameter cannot be prepared")
        self.compiled = compiled
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        processors: Mapping[str, Any] = compiled._bind_processors
        self.binds: tuple[Processor, ...] = tuple(processors.get(n) for n in self.names)
        # Columns left out of a write take their Python-side default, as SQLAlchemy gives
        # them at execution: only constant defaults are allowed here.
        self.defaults: dict[str, Any] = {}
        for column, default in [*((c, c.default) for c in compiled.insert_prefetch),
                                *((c, c.onupdate) for c in compiled.update_prefetch)]:
            if default is None or not default.is_scalar or column.key not in self.names:
                raise ValueError(f"column {column.key!r} has a default that cannot be "
                                 "prepared")
            self.defaults[column.key] = default.arg  # type: ignore[attr-defined]
        # Only the parameters given are used as they are: nothing to fill in.
        self.plain_binds = set(self.names) <= set(keys) and all(
            not b.callable for b in compiled.binds.values())
        columns = compiled._result_columns
        if columns:
            fields = [c.keyname for c in columns]
            self.row_type: type[tuple[Any, ...]] | None = _row_type(fields)
            self.results: tuple[Processor, ...] = tuple(
                c.type._cached_result_processor(_DIALECT, None) for c in columns)
        else:
            self.row_type = None
            self.results = ()

    def parameters(self, params: Mapping[str, Any]) -> list[Any]:
        values: Mapping[str, Any] = params
        if not self.plain_binds:
            values = self.compiled.construct_params(dict(params))
            values.update({k: v for k, v in self.defaults.items() if k not in params})
        out = []
        for name, process in zip(self.names, self.binds, strict=True):
            value = values[name]
            out.append(process(value) if process is not None and value is not None
                       else value)
        return out

    def row(self, raw: tuple[Any, ...]) -> Any:
        assert self.row_type is not None
        return self.row_type(*[p(v) if p is not None else v
                               for p, v in zip(self.results, raw, strict=True)])


def _row_type(fields: list[str]) -> type[tuple[Any, ...]]:
    """A tuple with attribute access and `_mapping`, as SQLAlchemy's Row has."""
    base = namedtuple("PreparedRow", fields)  # type: ignore[misc]

    class PreparedRow(base):
        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(self._fields, self, strict=True))

    return PreparedRow


class Rows:
    """The result of one prepared execution: rows, or the count and id of a write."""

    __slots__ = ("_cursor", "_form", "lastrowid", "rowcount")

    def __init__(self, cursor: sqlite3.Cursor, form: _Form) -> None:
        self._cursor = cursor
        self._form = form
        self.rowcount: int = cursor.rowcount
        self.lastrowid: int | None = cursor.lastrowid

    def first(self) -> Any:
        raw = self._cursor.fetchone()
        self._cursor.close()
        return None if raw is None else self._form.row(raw)

    def all(self) -> list[Any]:
        rows = [self._form.row(raw) for raw in self._cursor.fetchall()]
        self._cursor.close()
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.all())

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]


class Prepared:
    """A Core statement run without SQLAlchemy's per-execution work (see the module)."""

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, ...], _Form] = {}
        self._form(())  # compile errors show at import, not at the first command

    def _form(self, keys: tuple[str, ...]) -> _Form:
        form = self._forms.get(keys)
        if form is None:
            form = self._forms[keys] = _Form(self.statement, keys)
        return form

    def run_many(self, conn: Connection, rows: list[Mapping[str, Any]]) -> int:
        """Execute once per row (rows with the same keys), as one executemany; the count of
        rows written."""
        if not rows:
            return 0
        form = self._form(tuple(rows[0]))
        if any(tuple(row) != form.keys for row in rows):
            raise ValueError("every row of a prepared executemany needs the same keys")
        raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        return raw.executemany(form.sql, [form.parameters(row) for row in rows]).rowcount

    def each(self, conn: Connection, ids: Iterable[Any]) -> list[Any]:
        """The first row for each of a few ids (the statement's `id` parameter), in their
        order, leaving out ids without one: one run per id, which beats an IN query (compiled
        anew for every list length) while there are at most FEW."""
        return [row for i in ids if (row := self.run(conn, {"id": i}).first()) is not None]

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Rows:
        """Execute on `conn`'s SQLite connection, in its open transaction if any."""
        params = params or {}
        form = self._form(tuple(params))
        raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        return Rows(raw.execute(form.sql, form.parameters(params)), form)
