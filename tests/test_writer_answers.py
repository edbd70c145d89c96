"""A write is answered soon when this node cannot commit it (issue 20 §3).

A node catching up refuses at once and submits nothing; a node that knows no leader waits
about an election's length (NO_LEADER_WAIT), not the whole write timeout; a write that a
leader commits meanwhile is answered with its outcome. The Raft engine is a fake that
answers as pysyncobj does (callback with a FAIL_REASON), so the timings are the writer's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest
from pysyncobj import FAIL_REASON

from mes.app.commands import CommandDoor
from mes.app.errors import DomainError
from mes.raft import writer as writer_module
from mes.raft.readiness import RaftProgress, write_refusal
from mes.raft.writer import NoLeader, NotReady, Writer
from mes.state.machine import Outcome
from mes.state.ops import Op


class Engine:
    """Answers every command with MISSING_LEADER until `leader_at` (monotonic), then applies."""

    def __init__(self, leader_after: float | None) -> None:
        self.leader_at = None if leader_after is None else time.monotonic() + leader_after
        self.submitted = 0

    def apply_command(self, command: Mapping[str, Any], callback: Any) -> None:
        self.submitted += 1
        if self.leader_at is None or time.monotonic() < self.leader_at:
            callback(None, FAIL_REASON.MISSING_LEADER)
        else:
            callback(Outcome(value={"id": command["args"]["id"]}, index=7), FAIL_REASON.SUCCESS)


async def test_a_node_catching_up_refuses_at_once_and_submits_nothing() -> None:
    engine = Engine(leader_after=0)
    writer = Writer(engine, 5.0, unready=lambda: "catching up: 4000 entries behind")
    began = time.monotonic()
    with pytest.raises(NotReady, match="catching up"):
        await writer.submit(Op.JOB_CREATE, {"id": "j"})
    assert time.monotonic() - began < 0.5
    assert engine.submitted == 0


async def test_no_known_leader_is_answered_after_an_election_not_the_timeout() -> None:
    engine = Engine(leader_after=None)
    writer = Writer(engine, 30.0)
    began = time.monotonic()
    with pytest.raises(NoLeader, match="no leader is known") as raised:
        await writer.submit(Op.JOB_CREATE, {"id": "j"})
    waited = time.monotonic() - began
    assert not isinstance(raised.value, NotReady)  # it may have reached a leader: unknown
    assert writer_module.NO_LEADER_WAIT <= waited < writer_module.NO_LEADER_WAIT + 2.0
    assert engine.submitted > 1  # retried while it waited


async def test_a_leader_elected_meanwhile_commits_the_write() -> None:
    engine = Engine(leader_after=0.3)
    outcome = await Writer(engine, 30.0).submit(Op.JOB_CREATE, {"id": "j"})
    assert outcome.value == {"id": "j"} and outcome.index == 7


async def test_the_door_answers_not_ready_as_unavailable_without_a_retry_key() -> None:
    async def read(_: Any) -> Any:
        raise AssertionError("no quota read for the farm itself")

    door = CommandDoor(Writer(Engine(0), 5.0, unready=lambda: "catching up"), read)
    with pytest.raises(DomainError) as raised:
        await door.submit(Op.JOB_CREATE, {"id": "j"}, None)
    assert (raised.value.kind, raised.value.code) == ("unavailable", "not_ready")
    assert raised.value.retry_key is None  # nothing was submitted: nothing to retry safely


def progress(leader: str | None, applied: int, commit: int,
             stalled: float = 0.0) -> RaftProgress:
    return RaftProgress(leader=leader, applied_index=applied, commit_index=commit,
                        leader_commit_index=commit, stalled_for=stalled)


def test_what_refuses_writes() -> None:
    assert write_refusal(progress("a:1", 5000, 5010)) is None
    assert write_refusal(progress(None, 5000, 5000)) is None  # waits for an election instead
    assert write_refusal(progress("a:1", 500, 5000)) == (
        "catching up: applied index 500 is 4500 entries behind commit index 5000")
    refusal = write_refusal(progress("a:1", 10, 12, stalled=30.0))
    assert refusal is not None and refusal.startswith("cannot apply")


def test_a_leader_applying_a_burst_still_takes_writes() -> None:
    # 200 orders of 100 jobs commit in a few ticks: the leader is briefly behind its own
    # commit index by hundreds of entries, which is no reason to refuse.
    assert write_refusal(progress("a:1", 10_000, 10_500)) is None
