"""Versioned commands and state: the registry, format versions, migrations of old images,
newer data refused (exit status 2), the cluster version and its gate."""

from __future__ import annotations

import hashlib
import logging
import pickle
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.node import FarmNode
from mes.raft.snapshot import FORMAT, refuse_newer
from mes.state import cluster_versions, commands, migrations
from mes.state.commands import Op
from mes.state.errors import NewerData
from mes.state.machine import HANDLERS, StateMachine
from mes.state.users import ROLES
from mes.version import DATA_LEVEL, EXIT_NEWER_DATA, RELEASE, SCHEMA
from mes.versions import ClusterVersion, FreshReports, NotUpgraded
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[1]


def apply(machine: StateMachine, op: str, ts: float = 1000.0, **extra: Any) -> Any:
    return machine.apply({"op": op, "ts": ts, "rid": None, **extra})


# The registry ---------------------------------------------------------------------------

def test_every_command_is_declared_once_with_a_handler_role_and_formats() -> None:
    assert set(commands.COMMANDS) == {op.value for op in Op}
    for op, command in commands.COMMANDS.items():
        assert command.op == op
        assert command.formats and all(1 <= v <= DATA_LEVEL for v in command.formats)
        assert command.min_role in (None, *ROLES)
        assert HANDLERS[op] is command.formats[command.current].handler
    # the farm's own commands are no user's to send; telemetry and leases move no view
    assert commands.min_role(Op.SHARD_ASSIGN) is None
    assert commands.min_role(Op.JOB_CREATE) == "user"
    assert not commands.moves_farm(Op.PRINTER_TELEMETRY)
    assert not commands.moves_farm(Op.NODE_LEASE)
    assert commands.moves_farm(Op.JOB_CREATE)


# Format versions ------------------------------------------------------------------------

def _printer(version: int | None) -> dict[str, Any]:
    # the command as it is on the wire (and as 0.1.0 wrote it without `v`): a plain str op
    command: dict[str, Any] = {"op": "printer.create", "ts": 5.0, "rid": None,  # wire format
                               "args": {"id": "p1", "company": "Prusa", "model": "MK4"}}
    if version is not None:
        command["v"] = version
    return command


def test_a_command_of_release_0_1_0_without_a_version_means_what_format_1_means() -> None:
    old, new = StateMachine(), StateMachine()
    try:
        assert old.apply(_printer(None)).ok
        assert new.apply(_printer(1)).ok
        assert old.snapshot() == new.snapshot()
    finally:
        old.close()
        new.close()


def test_printer_format_1_keeps_its_kinds_and_its_words_and_format_6_adds_kinds() -> None:
    """A refused command's outcome is remembered in the replicated state: format 1 must
    refuse what release 0.1.0 refused, in its very words, on every node of a mixed cluster."""
    machine = StateMachine()
    try:
        def create(version: int, **fields: Any) -> Any:
            return machine.apply({"op": str(Op.PRINTER_CREATE), "v": version, "rid": None,
                                  "ts": 1.0, "args": fields})

        no_api = create(1, id="a", url="http://192.0.2.5", worker=True)
        assert no_api.error["code"] == "worker_needs_api"
        assert no_api.error["message"] == ("a printer with a worker needs its api "
                                           "(OctoPrint, PrusaLink or Mock)")
        klipper = {"url": "http://192.0.2.6", "api": "Moonraker", "worker": False}
        assert create(1, id="k", **klipper).error["field"] == "api"  # not a kind of 0.1.0
        assert create(6, id="k", **klipper).ok
        assert create(6, id="d", url="http://192.0.2.7", api="Duet").ok
        assert create(6, id="b", url="http://192.0.2.8", worker=True).error["message"] == (
            "a printer with a worker needs its api "
            "(OctoPrint, PrusaLink, Mock, Moonraker or Duet)")
    finally:
        machine.close()


def test_a_format_this_code_has_not_is_an_error_in_the_log_and_changes_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    machine = StateMachine()
    try:
        before = machine.snapshot()
        with caplog.at_level(logging.ERROR, logger="mes.state.machine"):
            unknown_op = apply(machine, "printer.explode", v=1, args={})
            unknown_format = apply(machine, Op.NODE_VERSION, v=1, args={
                "node": "127.0.0.1:7000", "release": "x", "level": 2})
            bad_version = apply(machine, Op.PRINTER_CREATE, v="one", args={"id": "p2"})
        assert unknown_op.error is not None and unknown_op.error["code"] == "unknown_op"
        assert unknown_format.error is not None
        assert unknown_format.error["code"] == "unknown_format"
        assert bad_version.error is not None and bad_version.error["code"] == "unknown_format"
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("'printer.explode'" in m and "version 1" in m for m in messages), messages
        assert any(repr(Op.NODE_VERSION.value) in m and "version 1" in m for m in messages), \
            messages
        assert machine.snapshot() == before
    finally:
        machine.close()


NEWER_COMMAND = textwrap.dedent("""
    from mes.state.machine import StateMachine
    from mes.state.ops import Op
    machine = StateMachine()
    assert machine.apply({"op": Op.PRINTER_CREATE, "ts": 1.0, "args": {"id": "p1"}}).ok
    machine.apply({"op": Op.PRINTER_CREATE, "v": %d, "ts": 2.0, "args": {"id": "p2"}})
    print("APPLIED")
""")


def test_a_command_of_a_newer_release_stops_the_node_before_it_is_applied() -> None:
    result = subprocess.run([sys.executable, "-c", NEWER_COMMAND % (DATA_LEVEL + 1)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == EXIT_NEWER_DATA, result.stderr
    assert "APPLIED" not in result.stdout
    assert f"format level {DATA_LEVEL + 1}" in result.stderr
    assert "newer release" in result.stderr


# Snapshots: migrated when older, refused when newer -----------------------------------

def _release_0_1_0_image() -> bytes:
    """An image as release 0.1.0 wrote it: no version tables, user_version 0."""
    machine = StateMachine()
    try:
        assert machine.apply(_printer(None)).ok
        image = machine.snapshot()
    finally:
        machine.close()
    db = sqlite3.connect(":memory:")
    db.deserialize(image)
    db.execute("DROP TABLE node_versions")
    db.execute("DROP TABLE cluster_version")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    old = db.serialize()
    db.close()
    return old


def test_an_image_of_release_0_1_0_is_migrated_to_this_schema_on_restore() -> None:
    machine = StateMachine()
    try:
        machine.restore(_release_0_1_0_image())
        assert machine.read(migrations.schema_of) == SCHEMA
        assert machine.read(cluster_versions.current_level) == 1
        assert machine.read(cluster_versions.reported) == {}
        # the migrated state takes today's commands, the version ones included
        assert apply(machine, Op.NODE_VERSION, v=2, args={
            "node": "127.0.0.1:7000", "release": RELEASE, "level": DATA_LEVEL}).ok
        printers = machine.read(lambda c: c.exec_driver_sql("SELECT id FROM printers").all())
        assert [p[0] for p in printers] == ["p1"]
    finally:
        machine.close()


def test_a_snapshot_readable_only_by_a_newer_schema_is_refused() -> None:
    refuse_newer({"format": FORMAT}, "0.1.0's")  # no versions: readable
    refuse_newer({"format": FORMAT, "schema": SCHEMA + 5, "min_reader": SCHEMA}, "additive")
    with pytest.raises(NewerData, match=r"release 9\.0\.0 .*cannot read it"):
        refuse_newer({"format": FORMAT, "schema": SCHEMA + 1, "min_reader": SCHEMA + 1,
                      "release": "9.0.0"}, "raft.snapshot")


def _server(data_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    from tests.ports import free_port

    env = {"DATA_DIR": str(data_dir), "UPLOAD_PATH": str(tmp_path / "up"),
           "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(free_port()),
           "RAFT_SELF": f"127.0.0.1:{free_port()}", "OPCUA_ENABLED": "false",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "mes"], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)


def _one_snapshot(tmp_path: Path) -> Path:
    """A data directory with a snapshot, written by this release (in-process node)."""
    from mes.config import Settings
    from tests.ports import free_port

    data = tmp_path / "data"
    settings = Settings(_env_file=None, data_dir=data,  # type: ignore[call-arg]
                        upload_path=tmp_path / "up", raft_self=f"127.0.0.1:{free_port()}",
                        raft_write_timeout=3.0)
    node = FarmNode(settings)
    try:
        wait_for(node.raft.is_leader, 10, "the single node to lead")
        node.raft.forceLogCompaction()
        wait_for(lambda: (data / "raft.snapshot").exists() and node.snapshots.completed, 10,
                 "a snapshot")
    finally:
        node.close()
    return data


def test_a_node_refuses_a_snapshot_of_a_newer_schema_with_exit_status_2(tmp_path: Path) -> None:
    data = _one_snapshot(tmp_path)
    snapshot = data / "raft.snapshot"
    payload = pickle.loads(snapshot.read_bytes())
    assert payload["schema"] == SCHEMA and payload["release"] == RELEASE
    payload.update(schema=SCHEMA + 1, min_reader=SCHEMA + 1, release="99.0.0")
    snapshot.write_bytes(pickle.dumps(payload))
    (data / "mes-version.json").unlink()  # only the snapshot says it is newer
    result = _server(data, tmp_path)
    assert result.returncode == EXIT_NEWER_DATA, result.stderr[-2000:]
    assert "written by release 99.0.0" in result.stderr
    assert f"release {RELEASE}" in result.stderr


def test_a_node_refuses_a_data_directory_of_a_newer_release_before_reading_it(
        tmp_path: Path) -> None:
    data = _one_snapshot(tmp_path)
    journal_before = (data / "raft.journal").read_bytes()
    (data / "mes-version.json").write_text(
        f'{{"release": "99.0.0", "level": {DATA_LEVEL + 1}, "schema": {SCHEMA}}}')
    result = _server(data, tmp_path)
    assert result.returncode == EXIT_NEWER_DATA, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("mes: ")]
    assert len(lines) == 1 and "written by release 99.0.0" in lines[0], result.stderr
    assert (data / "raft.journal").read_bytes() == journal_before
    assert "99.0.0" in (data / "mes-version.json").read_text()  # left as it was


# The cluster version ------------------------------------------------------------------

A, B = "127.0.0.1:7001", "127.0.0.1:7002"


def _report(machine: StateMachine, node: str, level: int = DATA_LEVEL) -> Any:
    return apply(machine, Op.NODE_VERSION, v=2,
                 args={"node": node, "release": "r", "level": level})


def _raise(machine: StateMachine, level: int, members: list[str]) -> Any:
    return apply(machine, Op.CLUSTER_VERSION, v=2,
                 args={"level": level, "members": members})


def test_the_cluster_version_rises_only_when_every_member_reported_it() -> None:
    machine = StateMachine()
    try:
        assert _report(machine, A).ok
        behind = _raise(machine, 2, [A, B])
        assert behind.error is not None and behind.error["code"] == "members_behind"
        assert B in behind.error["message"]
        assert machine.read(cluster_versions.current_level) == 1
        assert _report(machine, B, level=1).ok
        assert _raise(machine, 2, [A, B]).error["code"] == "members_behind"
        assert _report(machine, B).ok
        assert _report(machine, "127.0.0.1:7099").ok  # removed from the cluster since
        assert _raise(machine, 2, [A, B]).ok
        assert machine.read(cluster_versions.current_level) == 2
        assert set(machine.read(cluster_versions.reported)) == {A, B}
        lowered = _raise(machine, 1, [A, B])
        assert lowered.error is not None and lowered.error["code"] == "cluster_version_lowered"
        assert machine.read(cluster_versions.current_level) == 2
    finally:
        machine.close()


def _reports(**nodes: tuple[str, int, float]) -> dict[str, dict[str, Any]]:
    return {n: {"release": r, "level": lv, "reported_at": at} for n, (r, lv, at) in nodes.items()}


def test_the_leader_waits_for_every_member_to_report_again_after_a_node_upgrades() -> None:
    # The rolling upgrade of a 0.1.0 farm diverged once in CI: node a, upgraded last, held
    # a snapshot of 0.1.0 without c's report, and the leader (c) raised the cluster version
    # as soon as a reported, before c reported again. a refused the raise (members_behind),
    # b and c applied it. The leader now waits for a report of every member after the last
    # change it saw, in its applied order.
    fresh = FreshReports()
    members = ["a", "b", "c"]
    old = _reports(b=("0.5.0", 5, 1.0), c=("0.5.0", 5, 2.0))
    assert not fresh.ready(members, old)  # a has not reported (it runs 0.1.0)
    upgraded = {**old, **_reports(a=("0.5.0", 5, 3.0))}
    assert not fresh.ready(members, upgraded)  # a new leader knows no order: all again
    for node, at in (("a", 4.0), ("b", 5.0)):
        upgraded[node] = {**upgraded[node], "reported_at": at}
        assert not fresh.ready(members, upgraded)
    upgraded["c"] = {**upgraded["c"], "reported_at": 6.0}
    assert fresh.ready(members, upgraded)
    # A sole change seen by the leader: the changer's own report counts, the others' not.
    upgraded["b"] = {"release": "0.6.0", "level": 6, "reported_at": 7.0}
    assert not fresh.ready(members, upgraded)
    upgraded["a"] = {**upgraded["a"], "reported_at": 8.0}
    assert not fresh.ready(members, upgraded)
    upgraded["c"] = {**upgraded["c"], "reported_at": 0.5}  # a clock behind: order counts
    assert fresh.ready(members, upgraded)
    # A member that joins is a change as well.
    upgraded["d"] = {"release": "0.6.0", "level": 6, "reported_at": 9.0}
    assert not fresh.ready([*members, "d"], upgraded)


def test_a_single_node_raises_the_cluster_version_on_its_first_report() -> None:
    fresh = FreshReports()
    assert fresh.ready(["a"], _reports(a=("0.5.0", 5, 1.0)))


RAISED_BEYOND = textwrap.dedent("""
    from mes.state.machine import StateMachine
    from mes.state.ops import Op
    m = StateMachine()
    node = {"node": "127.0.0.1:7001", "release": "99", "level": %(level)d}
    assert m.apply({"op": Op.NODE_VERSION, "v": 2, "ts": 1.0, "args": node}).ok
    m.apply({"op": Op.CLUSTER_VERSION, "v": 2, "ts": 2.0,
             "args": {"level": %(level)d, "members": ["127.0.0.1:7001"]}})
    print("APPLIED")
""")


def test_a_node_below_a_raised_cluster_version_stops_instead_of_following() -> None:
    result = subprocess.run([sys.executable, "-c", RAISED_BEYOND % {"level": DATA_LEVEL + 1}],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == EXIT_NEWER_DATA, result.stderr
    assert "APPLIED" not in result.stdout
    assert "Upgrade this node" in result.stderr


def test_a_format_above_the_cluster_version_waits_for_it() -> None:
    machine = StateMachine()
    gated = "test.gated"
    commands.COMMANDS[gated] = commands.Command(
        Op.NOOP, {1: commands.Format(lambda c, a: None),
                  2: commands.Format(lambda c, a: "new")})
    try:
        version = ClusterVersion(machine.read)
        machine.add_listener(version.on_apply)
        with pytest.raises(NotUpgraded, match="cluster is at 1"):
            version.check(gated)
        version.check(Op.NODE_VERSION)  # before_gate: older nodes ignore it
        version.check(Op.JOB_CREATE)
        assert _report(machine, A).ok and _raise(machine, 2, [A]).ok
        version.check(gated)  # the cached level followed the commit
        assert version.level() == 2
    finally:
        del commands.COMMANDS[gated]
        machine.close()


async def test_a_node_reports_its_version_and_the_leader_raises_the_cluster_version(
        node: FarmNode, api: httpx.AsyncClient) -> None:
    wait_for(node.raft.is_leader, 10, "the single node to lead")
    before = (await api.get("/api/v1/cluster")).json()
    assert before["version"] == RELEASE and before["level"] == DATA_LEVEL
    assert before["cluster_version"] == 1
    assert before["nodes"][0]["version"] is None
    remembered = node.machine.read(lambda c: c.exec_driver_sql(
        "SELECT count(*) FROM applied_requests").scalar())
    reporter = node.versions_reporter()
    await reporter.step()  # reports, then (leading) raises the cluster version
    after = (await api.get("/api/v1/cluster")).json()
    assert after["cluster_version"] == DATA_LEVEL
    assert after["nodes"][0]["version"] == RELEASE
    assert after["nodes"][0]["level"] == DATA_LEVEL
    applied = node.machine.applied_count
    await reporter.step()  # nothing left to say
    assert node.machine.applied_count == applied
    # an older node rejects both: neither may leave a trace in the request memory
    assert node.machine.read(lambda c: c.exec_driver_sql(
        "SELECT count(*) FROM applied_requests").scalar()) == remembered


async def test_the_writer_logs_plain_data_with_the_format_version() -> None:
    from mes.raft.writer import Writer
    from mes.state.machine import Outcome

    written: list[Any] = []

    class Log:
        def apply_command(self, command: Any, callback: Any) -> None:
            written.append(pickle.dumps(command))
            callback(Outcome(value=1), 0)

    gate_calls: list[str] = []

    def gate(op: str, args: Any) -> tuple[int, dict[str, Any]]:
        gate_calls.append(op)
        return 1, {**args, "chosen": True}

    await Writer(Log(), 1.0, gate).submit(Op.JOB_CREATE, {"id": "j1"})
    await Writer(Log(), 1.0).submit(Op.NODE_VERSION, {"node": A})
    first, second = (pickle.loads(w) for w in written)
    # the log holds the op as a plain str, spelled as on the wire
    assert first["op"] == "job.create" and first["v"] == 1  # wire format
    assert type(first["op"]) is str
    assert first["args"] == {"id": "j1", "chosen": True}  # as the gate wrote them
    assert second["op"] == "node.version" and second["v"] == 2  # wire format
    # an older release unpickles the entry without any module of this one
    assert all(b"mes." not in w for w in written)
    assert gate_calls == [Op.JOB_CREATE]


def test_readers_never_see_an_image_before_its_migration() -> None:
    import threading

    machine = StateMachine()
    old = _release_0_1_0_image()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_forever() -> None:
        while not stop.is_set():
            try:
                machine.read(cluster_versions.current_level)
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=read_forever) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(30):
            machine.restore(old)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        machine.close()
    assert errors == []


# A new password ends web sessions: user.update of level 3 --------------------------------

OLD_HASH, NEW_HASH = "$argon2id$" + "o" * 20, "$argon2id$" + "n" * 20


def _accounts(machine: StateMachine) -> None:
    assert apply(machine, Op.USER_CREATE, args={
        "id": "ada", "name": "Ada", "role": "user", "password_hash": OLD_HASH}).ok
    for token_id, name in (("s1", "web session"), ("s2", "web session"), ("api", "script")):
        assert apply(machine, Op.TOKEN_CREATE, args={
            "id": token_id, "user_id": "ada", "name": name,
            "token_hash": hashlib.sha256(token_id.encode()).hexdigest(),
            "expires_at": None}).ok


def _revoked(machine: StateMachine) -> set[str]:
    rows = machine.read(lambda c: c.exec_driver_sql(
        "SELECT id FROM api_tokens WHERE revoked_at IS NOT NULL").all())
    return {r[0] for r in rows}


def test_user_update_keeps_its_level_1_meaning_and_level_3_ends_other_sessions() -> None:
    old, new = StateMachine(), StateMachine()
    try:
        for machine in (old, new):
            _accounts(machine)
        # a level 1 command (as 0.1.0 and 0.2.0 wrote it) changes the password only
        assert apply(old, Op.USER_UPDATE, args={"id": "ada", "password_hash": NEW_HASH}).ok
        assert _revoked(old) == set()
        # level 3: the other web session ends; the one that changed it and API tokens stay
        assert apply(new, Op.USER_UPDATE, v=3, args={
            "id": "ada", "password_hash": NEW_HASH, "keep_token": "s1"}).ok
        assert _revoked(new) == {"s2"}
        # the same password again ends nothing; other changes end nothing
        assert apply(new, Op.USER_UPDATE, v=3, args={"id": "ada", "name": "Ada L."}).ok
        assert _revoked(new) == {"s2"}
        # level 1 refuses the level 3 argument, as 0.2.0 would
        refused = apply(old, Op.USER_UPDATE, args={"id": "ada", "keep_token": "s1"})
        assert refused.error is not None and refused.error["code"] == "unknown_field"
    finally:
        old.close()
        new.close()


def test_below_cluster_version_3_a_password_change_is_written_in_level_1() -> None:
    machine = StateMachine()
    try:
        version = ClusterVersion(machine.read)
        machine.add_listener(version.on_apply)
        args = {"id": "ada", "password_hash": "new", "keep_token": "s1"}
        assert version.writable(Op.USER_UPDATE, args) == (
            1, {"id": "ada", "password_hash": "new"})
        assert _report(machine, A).ok and _raise(machine, DATA_LEVEL, [A]).ok
        # Each command's newest format (level 5 changed none).
        assert version.writable(Op.USER_UPDATE, args) == (4, args)
        assert version.writable(Op.JOB_CREATE, {"id": "j"}) == (7, {"id": "j"})
    finally:
        machine.close()


def test_level_4_formats_are_written_as_level_1_or_3_until_the_cluster_reaches_4() -> None:
    machine = StateMachine()
    try:
        version = ClusterVersion(machine.read)
        machine.add_listener(version.on_apply)
        assert _report(machine, A).ok and _raise(machine, 3, [A]).ok
        args = {"id": "ada", "name": "Ada", "keep_token": "s1"}
        assert version.writable(Op.USER_UPDATE, args) == (3, args)
        for op in (Op.JOB_CREATE, Op.ORDER_CREATE, Op.FILE_REGISTER, Op.USER_CREATE):
            assert version.writable(op, {"id": "x"}) == (1, {"id": "x"})
        assert _raise(machine, 4, [A]).ok
        for op in (Op.JOB_CREATE, Op.ORDER_CREATE, Op.FILE_REGISTER, Op.USER_CREATE,
                   Op.USER_UPDATE):
            assert version.writable(op, {"id": "x"}) == (4, {"id": "x"})
    finally:
        machine.close()


async def test_a_new_password_signs_out_the_users_other_web_sessions(
        node: FarmNode, api: httpx.AsyncClient) -> None:
    from tests.accounts import make_user

    await make_user(api, "ada", password="first password 1")
    await node.versions_reporter().step()  # the single node raises the cluster version

    async def session() -> dict[str, str]:
        signed = await api.post("/api/v1/session", headers={"Authorization": ""},
                                json={"name": "ada", "password": "first password 1"})
        assert signed.status_code == 200, signed.text
        return {"Authorization": f"Bearer {signed.cookies['mes_session']}"}

    laptop, phone = await session(), await session()
    changed = await api.patch("/api/v1/users/ada", headers=laptop,
                              json={"password": "second password 2"})
    assert changed.status_code == 200, changed.text
    assert (await api.get("/api/v1/users/me", headers=laptop)).status_code == 200
    assert (await api.get("/api/v1/users/me", headers=phone)).status_code == 401
