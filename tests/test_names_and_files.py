"""Level 4 (release 0.4.0): a user name is never another account's id, so a sign-in never
picks between two accounts; and a user prints and downloads only files they uploaded (or
that a job of theirs prints), so knowing a file's SHA-256 is not enough."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool

from mes.auth.secrets import hash_password
from mes.node import FarmNode
from mes.raft.writer import Writer
from mes.state import migrations
from mes.state.machine import StateMachine
from mes.state.ops import Op
from mes.state.tables import metadata
from tests.accounts import make_user
from tests.farm_helpers import running_farm, upload

GCODE_B = b"G28\nG1 X10 Y10\n; bob's own part\n"


def apply(machine: StateMachine, op: str, args: dict[str, Any], v: int | None = None,
          actor: str | None = None) -> Any:
    command: dict[str, Any] = {"op": op, "ts": 1000.0, "rid": None, "args": args}
    if v is not None:
        command["v"] = v
    if actor is not None:
        command["actor"] = actor
    return machine.apply(command)


def _code(outcome: Any) -> str | None:
    return None if outcome.error is None else str(outcome.error["code"])


def test_level_4_keeps_names_and_ids_apart_and_level_1_keeps_its_meaning() -> None:
    machine = StateMachine()
    try:
        assert apply(machine, Op.USER_CREATE, {"id": "u-ada", "name": "Ada", "role": "user"},
                     v=4).ok
        assert apply(machine, Op.USER_CREATE, {"id": "u-bob", "name": "Bob", "role": "user"},
                     v=4).ok
        # a name that is another user's id, in any letter case
        for version in (3, 4):
            taken = apply(machine, Op.USER_UPDATE, {"id": "u-bob", "name": "U-ADA"}, v=version)
            assert _code(taken) == ("name_taken" if version == 4 else None)
            if version == 3:  # level 3 meant what it meant: the rename happened
                assert apply(machine, Op.USER_UPDATE, {"id": "u-bob", "name": "Bob"}, v=4).ok
        # an id that is another user's name; a name that is another's id, at creation
        assert _code(apply(machine, Op.USER_CREATE, {"id": "bob", "name": "Robert",
                                                    "role": "user"}, v=4)) == "already_exists"
        assert _code(apply(machine, Op.USER_CREATE, {"id": "u-cy", "name": "u-bob",
                                                    "role": "user"}, v=4)) == "name_taken"
        # one's own id as one's name is no collision
        assert apply(machine, Op.USER_CREATE, {"id": "dee", "name": "DEE", "role": "user"},
                     v=4).ok
        assert apply(machine, Op.USER_UPDATE, {"id": "dee", "name": "dee"}, v=4).ok
        names = dict(machine.read(lambda c: c.execute(text(
            "SELECT id, name FROM users")).all()))
        assert names == {"u-ada": "Ada", "u-bob": "Bob", "dee": "dee"}
        # level 1 (as release 0.1.0 to 0.3.0 wrote it) still creates what it created
        assert apply(machine, Op.USER_CREATE, {"id": "ada", "name": "x", "role": "user"}).ok
    finally:
        machine.close()


async def _sign_in(api: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await api.post("/api/v1/session", json={"name": name, "password": password})


async def test_a_name_that_is_another_accounts_id_never_captures_its_sign_in(
        tmp_path: Path) -> None:
    async with running_farm(tmp_path) as (node, api):
        for user_id, name, password in (("u-ada", "Ada", "ada-password-1"),
                                        ("u-bob", "Bob", "bob-password-1")):
            created = await api.post("/api/v1/users", json={
                "id": user_id, "name": name, "role": "user", "password": password})
            assert created.status_code == 201, created.text
        renamed = await api.patch("/api/v1/users/u-bob", json={"name": "u-ada"})
        assert renamed.status_code == 409, renamed.text
        assert renamed.json()["error"]["code"] == "name_taken"
        assert "another user's id" in renamed.json()["error"]["message"]
        clash = await api.post("/api/v1/users", json={"id": "ada", "name": "Other",
                                                      "role": "user"})
        assert clash.status_code == 409 and clash.json()["error"]["code"] == "already_exists"
        signed = await _sign_in(api, "u-ada", "ada-password-1")
        assert signed.status_code == 200 and signed.json()["user"]["id"] == "u-ada"

        # data from before level 4 may hold the collision: a level 3 rename, as 0.3.0 wrote
        outcome = await _apply_level_3(node)
        assert outcome.ok, outcome.error
        for password in ("bob-password-1", "ada-password-1"):
            refused = await _sign_in(api, "u-ada", password)
            assert refused.status_code == 401, refused.text  # neither account, never Bob's
        assert (await _sign_in(api, "Ada", "ada-password-1")).status_code == 200
        assert (await _sign_in(api, "u-bob", "bob-password-1")).status_code == 200


async def _apply_level_3(node: FarmNode) -> Any:
    """A level-3 user.update through Raft, as a 0.3.0 node in the cluster would write it."""
    level_3 = Writer(node.writer._node, 10.0, gate=lambda op, args: (3, dict(args)))
    return await level_3.submit(Op.USER_UPDATE, {"id": "u-bob", "name": "u-ada"})


async def test_a_files_sha_alone_neither_prints_nor_downloads_it(tmp_path: Path) -> None:
    async with running_farm(tmp_path) as (_node, api):
        ada = await make_user(api, "ada")
        bob = await make_user(api, "bob")
        assert (await api.post("/api/v1/filaments", json={
            "id": "s1", "type": "PLA", "color": "red", "total_weight_in_grams": 1000,
            "remaining_weight_in_grams": 1000})).status_code == 201
        api.headers.update(ada)
        secret = await upload(api, "ada-thesis.gcode")
        api.headers.update(bob)
        job = {"filament_id": "s1", "print_weight_in_grams": 5, "file_id": secret["id"]}
        stolen = await api.post("/api/v1/print_jobs", json={**job, "id": "bob-1"})
        nowhere = await api.post("/api/v1/print_jobs", json={
            **job, "id": "bob-2", "file_id": hashlib.sha256(b"no such file").hexdigest()})
        assert stolen.status_code == nowhere.status_code == 404, stolen.text
        assert stolen.json()["error"]["code"] == nowhere.json()["error"]["code"] \
            == "file_not_found"
        order = await api.post("/api/v1/orders", json={"id": "o-bob", "jobs": [job]})
        assert order.status_code == 404 and order.json()["error"]["code"] == "file_not_found"
        assert (await api.get(f"/api/v1/files/{secret['id']}")).status_code == 404
        # bob's own upload is his to print and download
        own = await upload(api, "bob.gcode", GCODE_B)
        assert (await api.post("/api/v1/print_jobs", json={
            **job, "id": "bob-3", "file_id": own["id"]})).status_code == 201
        assert (await api.get(f"/api/v1/files/{own['id']}")).content == GCODE_B
        # ada prints hers; an operator may print anyone's
        api.headers.update(ada)
        assert (await api.post("/api/v1/print_jobs", json={
            **job, "id": "ada-1"})).status_code == 201
        assert (await api.get(f"/api/v1/files/{secret['id']}")).status_code == 200
        operator = await make_user_as_admin(api, "olga", "operator")
        api.headers.update(operator)
        assert (await api.post("/api/v1/print_jobs", json={
            **job, "id": "olga-1"})).status_code == 201


async def make_user_as_admin(api: httpx.AsyncClient, user_id: str, role: str
                             ) -> dict[str, str]:
    from tests.auth import admin_headers

    saved = dict(api.headers)
    api.headers.update(admin_headers())
    try:
        return await make_user(api, user_id, role)
    finally:
        api.headers.clear()
        api.headers.update(saved)


def test_level_1_job_create_keeps_its_meaning() -> None:
    """A job.create of release 0.3.0 in the log names any stored file, as it did then."""
    machine = StateMachine()
    try:
        assert apply(machine, Op.USER_CREATE, {"id": "ada", "name": "Ada", "role": "user"}).ok
        assert apply(machine, Op.USER_CREATE, {"id": "bob", "name": "Bob", "role": "user"}).ok
        assert apply(machine, Op.FILAMENT_CREATE, {
            "id": "s1", "type": "PLA", "color": "red", "total_weight_in_grams": 100,
            "remaining_weight_in_grams": 100}).ok
        sha = hashlib.sha256(b"ada").hexdigest()
        assert apply(machine, Op.FILE_REGISTER, {"id": sha, "name": "a.gcode", "size": 3},
                     v=4, actor="ada").ok
        job = {"filament_id": "s1", "print_weight_in_grams": 1, "file_id": sha}
        refused = apply(machine, Op.JOB_CREATE, {**job, "id": "j4"}, v=4, actor="bob")
        assert _code(refused) == "file_not_found"
        assert apply(machine, Op.JOB_CREATE, {**job, "id": "j1"}, actor="bob").ok
        assert apply(machine, Op.JOB_CREATE, {**job, "id": "j4a"}, v=4, actor="ada").ok
    finally:
        machine.close()


def test_the_schema_3_migration_recovers_uploaders_from_the_audit_log() -> None:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    sha, gone = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"gone").hexdigest()
    with engine.begin() as conn:
        metadata.create_all(conn, tables=[t for t in metadata.sorted_tables
                                          if t.name != "file_owners"])
        conn.execute(text("INSERT INTO files (id, name, size, created_at) "
                          "VALUES (:id, 'a.gcode', 1, 1.0)"), {"id": sha})
        for seq, actor, target in ((1, "ada", sha), (2, "bob", sha), (3, "ada", sha),
                                   (4, "cy", gone)):
            conn.execute(text("INSERT INTO audit_log (seq, at, actor, op, target) VALUES "
                              "(:seq, :seq, :actor, :op, :target)"),
                         {"seq": seq, "actor": actor, "op": Op.FILE_REGISTER.value,
                          "target": target})
        migrations.set_schema(conn, 2)
        assert migrations.migrate(conn) == 2
        rows = conn.execute(text("SELECT file_id, user_id, created_at FROM file_owners "
                                 "ORDER BY user_id")).all()
    assert [tuple(r) for r in rows] == [(sha, "ada", 1.0), (sha, "bob", 2.0)]


@pytest.fixture(autouse=True)
def _hash() -> None:
    hash_password("warm the hasher")  # the first hash loads argon2: not in a timed path
