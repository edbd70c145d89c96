"""Readiness (`/health`), liveness (`/health/live`) and the state digest, in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.api.app import create_app
from mes.auth import authenticator
from mes.auth.bootstrap import ensure_admin
from mes.config import Settings
from mes.node import FarmNode
from mes.raft import readiness
from mes.raft.readiness import RaftProgress, not_ready_reasons
from mes.state.digest import state_digest
from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from tests.auth import admin_headers
from tests.polling import wait_for
from tests.ports import free_port


def progress(**changes: Any) -> RaftProgress:
    base: dict[str, Any] = {"leader": "127.0.0.1:1", "applied_index": 500, "commit_index": 500,
                            "leader_commit_index": 500, "stalled_for": 0.0}
    return RaftProgress(**{**base, **changes})


def test_ready_when_leader_known_caught_up_and_applying() -> None:
    assert not_ready_reasons(progress()) == []
    # a few entries behind is normal under load
    assert not_ready_reasons(progress(applied_index=480, commit_index=500)) == []


def test_not_ready_reasons() -> None:
    assert not_ready_reasons(progress(leader=None)) == ["no leader is known"]
    replaying = not_ready_reasons(progress(applied_index=246, commit_index=15_153,
                                           leader_commit_index=None))
    assert replaying == ["catching up: applied index 246 is 14907 entries behind commit "
                         "index 15153"]
    behind_leader = not_ready_reasons(progress(applied_index=348, commit_index=348,
                                               leader_commit_index=748))
    assert behind_leader and behind_leader[0].startswith("catching up")
    stuck = not_ready_reasons(progress(applied_index=499, stalled_for=6.0))
    assert stuck == ["cannot apply: applied index stuck at 499 for 6 s below commit index 500"]
    # stalled but nothing waiting to be applied is just an idle node
    assert not_ready_reasons(progress(stalled_for=60.0)) == []


def settings_for(tmp_path: Path, raft_port: int) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                    upload_path=tmp_path / "upload", raft_self=f"127.0.0.1:{raft_port}",
                    raft_write_timeout=3.0)


def client(node: FarmNode) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(node)),
                             base_url="http://mes/api/v1", headers=admin_headers())


async def get(node: FarmNode, path: str) -> httpx.Response:
    if not path.startswith("/health"):
        await ensure_admin(node)  # no lifespan runs here: make the admin the token needs
    async with client(node) as api:
        return await api.get(path)


async def write_noops(node: FarmNode, count: int) -> None:
    await asyncio.gather(*(node.writer.submit(Op.NOOP, {}) for _ in range(count)))


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[FarmNode]:
    node = FarmNode(settings_for(tmp_path, free_port()))
    yield node
    node.close()


def wait_leader(node: FarmNode) -> None:
    wait_for(node.raft.is_leader, 10, "the single node to lead")


async def test_health_and_live_answer_ok_on_a_caught_up_node(farm: FarmNode) -> None:
    wait_leader(farm)
    await write_noops(farm, 3)
    health = await get(farm, "/health")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok" and body["role"] == "leader"
    assert body["applied_index"] == body["commit_index"] >= 4
    live = await get(farm, "/health/live")
    assert live.status_code == 200 and live.json()["status"] == "ok"


async def test_health_says_503_when_apply_is_stuck(farm: FarmNode,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    wait_leader(farm)
    monkeypatch.setattr(readiness, "STALL_SECONDS", 1.0)

    def broken(command: Mapping[str, Any]) -> Outcome:
        raise RuntimeError("apply cannot proceed")

    monkeypatch.setattr(farm.machine, "apply", broken)
    with pytest.raises(Exception):  # noqa: B017 (NoLeader: it commits but never applies)
        await farm.writer.submit(Op.NOOP, {})

    async def not_ready() -> httpx.Response | None:
        response = await get(farm, "/health")
        return response if response.status_code == 503 else None

    deadline = time.monotonic() + 10
    response = await not_ready()
    while response is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        response = await not_ready()
    assert response is not None, "health stayed ok while nothing could be applied"
    body = response.json()
    assert body["error"]["code"] == "not_ready"
    assert any(r.startswith("cannot apply") for r in body["reasons"]), body
    assert body["commit_index"] > body["applied_index"]
    assert (await get(farm, "/health/live")).status_code == 200


async def test_restarted_node_is_not_ready_while_it_replays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raft_port = free_port()
    first = FarmNode(settings_for(tmp_path, raft_port))
    try:
        wait_leader(first)
        await write_noops(first, 400)
    finally:
        first.close()

    original = StateMachine.apply

    def slow(self: StateMachine, command: Mapping[str, Any], index: int = 0) -> Outcome:
        time.sleep(0.005)  # replay at about 200 commands/s
        return original(self, command, index)

    monkeypatch.setattr(StateMachine, "apply", slow)
    second = FarmNode(settings_for(tmp_path, raft_port))
    try:
        statuses = []
        reasons: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = await get(second, "/health")
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            reasons += response.json()["reasons"]
            await asyncio.sleep(0.05)
        assert statuses[-1] == 200, "the node never became ready"
        assert 503 in statuses, "ready before the replay finished"
        assert any(r.startswith("catching up") for r in reasons), reasons
        body = (await get(second, "/health")).json()
        assert body["commit_index"] > 400
        assert body["commit_index"] - body["applied_index"] <= readiness.MAX_LAG
    finally:
        second.close()


async def test_digest_route_matches_the_state_at_the_applied_index(
        farm: FarmNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # No last-use record of the token committed in the background between the two reads.
    monkeypatch.setattr(authenticator, "LAST_USED_EVERY", float("inf"))
    wait_leader(farm)
    await farm.writer.submit(Op.PRINTER_CREATE, {"id": "p1"})
    first = (await get(farm, "/cluster/digest")).json()
    assert first["applied_index"] == farm.raft.raftLastApplied
    assert first["digest"] == farm.machine.read(state_digest)
    assert len(first["digest"]) == 64
    await farm.writer.submit(Op.PRINTER_UPDATE, {"id": "p1", "model": "MK4"})
    second = (await get(farm, "/cluster/digest")).json()
    assert second["applied_index"] > first["applied_index"]
    assert second["digest"] != first["digest"]


def apply_all(machine: StateMachine, commands: list[dict[str, Any]]) -> str:
    for command in commands:
        machine.apply(command)
    return machine.read(state_digest)


def test_digest_is_equal_for_equal_states_and_sees_every_table() -> None:
    commands: list[dict[str, Any]] = [
        {"op": Op.PRINTER_CREATE, "args": {"id": "p"}, "ts": 5.0, "rid": "a"},
        {"op": Op.FILAMENT_CREATE, "args": {"id": "f", "type": "ABS", "color": "k",
                                           "total_weight_in_grams": 50}, "ts": 6.0, "rid": "b"},
    ]
    one, two = StateMachine(), StateMachine()
    assert apply_all(one, commands) == apply_all(two, commands)
    # the same entities, but a request remembered differently: still a different state
    three = StateMachine()
    other_rid = [dict(commands[0], rid="z"), commands[1]]
    assert apply_all(three, other_rid) != one.read(state_digest)
    # a timestamp differing by one ulp is a different state
    four = StateMachine()
    assert apply_all(four, [dict(commands[0], ts=5.000000000000001), commands[1]]) \
        != one.read(state_digest)
    restored = StateMachine()
    restored.restore(one.snapshot())
    assert restored.read(state_digest) == one.read(state_digest)
