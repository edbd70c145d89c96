"""Failed sign-ins reach the replicated audit log: counted per account, source and interface,
reported as one small command per interval (a flood is one write), never blocking sign-in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mes.auth.failed_sign_ins import FailedSignIns
from mes.raft.writer import NoLeader
from mes.state.machine import StateMachine
from mes.state.ops import Op
from mes.versions import NotUpgraded
from tests.auth import admin_headers
from tests.farm_helpers import running_farm


async def test_failed_sign_ins_are_in_the_audit_log_as_one_write(tmp_path: Path) -> None:
    async with running_farm(tmp_path) as (node, api):
        created = await api.post("/api/v1/users", json={
            "id": "ada", "name": "Ada", "role": "user", "password": "ada-password-1"})
        assert created.status_code == 201
        applied: list[str] = []
        node.on_apply(lambda command, _outcome: applied.append(str(command.get("op"))))
        for login in ("Ada", "ada", "mallory", "Ada"):
            wrong = await api.post("/api/v1/session", json={"name": login,
                                                            "password": "guess-123456"})
            assert wrong.status_code in (401, 429), wrong.text
        assert await node.failed_sign_ins.report() == 2
        assert applied.count(Op.SIGN_IN_FAILED) == 1
        entries = (await api.get("/api/v1/audit", params={"limit": 500},
                                 headers=admin_headers())).json()
        failed = {(e["actor"], e["target"]) for e in entries if e["op"] == "sign_in.failed"}
        source = "127.0.0.1"
        counted = {actor: target for actor, target in failed}
        assert set(counted) == {"ada", "?mallory"}, failed
        assert counted["?mallory"] == "rest 127.0.0.1 x1"
        assert counted["ada"].startswith(f"rest {source} x")
        assert await node.failed_sign_ins.report() == 0  # nothing new: no write
        assert applied.count(Op.SIGN_IN_FAILED) == 1


class FakeSubmit:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[Mapping[str, Any]] = []

    async def __call__(self, op: str, args: Mapping[str, Any]) -> Any:
        self.calls.append(args)
        if self.error is not None:
            raise self.error
        return None


async def test_a_report_without_a_leader_is_kept_and_one_below_level_4_dropped() -> None:
    no_leader = FakeSubmit(NoLeader("none"))
    report = FailedSignIns(no_leader)
    for _ in range(3):
        report.failed("ada", "10.0.0.5", "rest")
    assert await report.report() == 0
    no_leader.error = None
    assert await report.report() == 1
    assert no_leader.calls[-1]["failures"] == [
        {"account": "ada", "source": "10.0.0.5", "interface": "rest", "count": 3}]
    old = FakeSubmit(NotUpgraded(Op.SIGN_IN_FAILED, 4, 3))
    below = FailedSignIns(old)
    below.failed("ada", None, "opcua")
    assert await below.report() == 0 and below.dropped == 1
    assert await below.report() == 0 and len(old.calls) == 1  # not tried again


async def test_a_flood_of_names_stays_bounded() -> None:
    submit = FakeSubmit()
    report = FailedSignIns(submit)
    for index in range(10_000):
        report.failed(f"?name{index}", f"10.0.{index // 256}.{index % 256}", "rest")
    assert await report.report() == 199  # 198 told apart, the rest as one "?" entry
    failures = submit.calls[0]["failures"]
    assert sum(f["count"] for f in failures) == 10_000
    assert failures[-1]["account"] == "?" and failures[-1]["count"] == 10_000 - 198


@pytest.mark.parametrize("failures", [
    [], "x", [{"account": "", "interface": "rest", "count": 1}],
    [{"account": "a", "interface": "smtp", "count": 1}],
    [{"account": "a", "interface": "rest", "count": 0}],
    [{"account": "a", "interface": "rest", "count": 1, "extra": 1}],
    [{"account": "a" * 65, "interface": "rest", "count": 1}],
])
def test_a_bad_report_is_refused_and_records_nothing(failures: Any) -> None:
    machine = StateMachine()
    try:
        outcome = machine.apply({"op": Op.SIGN_IN_FAILED.value, "v": 4, "ts": 1.0, "rid": None,
                                 "args": {"failures": failures}})
        assert outcome.error is not None
        rows = machine.read(lambda c: c.exec_driver_sql(
            "SELECT count(*) FROM audit_log").scalar())
        assert rows == 0
    finally:
        machine.close()
