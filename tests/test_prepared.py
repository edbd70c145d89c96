"""Prepared statements give exactly what SQLAlchemy's own execution gives.

Apply runs its hot statements through `mes.state.prepared` (straight on sqlite3); a value
that differed (1 for True, a missing default) would change outcomes and state between
nodes or releases, so each is compared with SQLAlchemy's result on the same database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, bindparam, create_engine, insert, select, update

from mes.state.prepared import Prepared
from mes.state.tables import metadata, printers, users

NOW = 1_700_000_000.5


@pytest.fixture
def conn() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        metadata.create_all(connection)
        connection.commit()
        yield connection
    engine.dispose()


def test_insert_fills_column_defaults_as_sqlalchemy_does(conn: Connection) -> None:
    row = {"id": "p1", "url": None, "created_at": NOW, "updated_at": NOW}
    with conn.begin():
        Prepared(insert(printers)).run(conn, row)
        conn.execute(insert(printers), {**row, "id": "p2"})
    got = {r.id: r._mapping for r in conn.execute(select(printers))}
    assert {k: v for k, v in got["p1"].items() if k != "id"} == \
        {k: v for k, v in got["p2"].items() if k != "id"}
    assert got["p1"]["worker"] is False and got["p1"]["bed_clear"] is True
    assert got["p1"]["company"] == ""


def test_rows_convert_booleans_and_keep_floats(conn: Connection) -> None:
    with conn.begin():
        conn.execute(insert(printers), {"id": "p", "worker": True, "bed_clear": False,
                                        "created_at": 5, "updated_at": NOW})
    by_id = Prepared(select(printers).where(printers.c.id == bindparam("id")))
    mine = by_id.run(conn, {"id": "p"}).first()
    theirs = conn.execute(select(printers).where(printers.c.id == "p")).first()
    assert theirs is not None
    assert dict(mine._mapping) == dict(theirs._mapping)
    assert [type(v) for v in mine] == [type(v) for v in theirs]
    assert mine.worker is True and mine.bed_clear is False
    assert mine.created_at == 5.0 and isinstance(mine.created_at, float)
    assert by_id.run(conn, {"id": "missing"}).first() is None


def test_boolean_parameters_are_stored_as_sqlalchemy_stores_them(conn: Connection) -> None:
    with conn.begin():
        conn.execute(insert(users), {"id": "u", "name": "U", "role": "user",
                                     "created_at": NOW, "updated_at": NOW})
        changed = Prepared(update(users).where(users.c.id == bindparam("uid"))
                           .values(disabled=bindparam("off"))).run(conn, {"uid": "u",
                                                                          "off": True})
    assert changed.rowcount == 1
    raw = conn.exec_driver_sql("SELECT disabled FROM users WHERE id = 'u'").scalar()
    assert raw == 1
    assert conn.execute(select(users.c.disabled)).scalar() is True


def test_a_rejected_transaction_undoes_prepared_writes(conn: Connection) -> None:
    insert_printer = Prepared(insert(printers))
    with pytest.raises(RuntimeError), conn.begin():
        insert_printer.run(conn, {"id": "gone", "created_at": NOW, "updated_at": NOW})
        raise RuntimeError("rejected")
    assert conn.execute(select(printers.c.id)).all() == []


def test_all_and_scalar(conn: Connection) -> None:
    with conn.begin():
        for name in ("b", "a"):
            conn.execute(insert(printers), {"id": name, "created_at": NOW, "updated_at": NOW})
    ids = Prepared(select(printers.c.id).order_by(printers.c.id))
    assert [r.id for r in ids.run(conn).all()] == ["a", "b"]
    assert ids.run(conn).scalar() == "a"


def test_in_lists_are_refused_at_import_time() -> None:
    with pytest.raises(ValueError, match="expanding"):
        Prepared(select(printers).where(printers.c.id.in_(bindparam("ids", expanding=True))))


def test_run_many_writes_every_row_and_refuses_mixed_keys(conn: Connection) -> None:
    insert_printer = Prepared(insert(printers))
    with conn.begin():
        written = insert_printer.run_many(conn, [
            {"id": name, "created_at": NOW, "updated_at": NOW} for name in ("a", "b", "c")])
    assert written == 3
    assert [r.id for r in conn.execute(select(printers.c.id).order_by(printers.c.id))] == [
        "a", "b", "c"]
    assert insert_printer.run_many(conn, []) == 0
    with pytest.raises(ValueError, match="same keys"):
        insert_printer.run_many(conn, [{"id": "d", "created_at": NOW, "updated_at": NOW},
                                       {"id": "e", "created_at": NOW}])
