"""pysyncobj's follower side of log replication, driven message by message in-process.

Each case also runs on plain pysyncobj to show the failure our subclass fixes.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf

from mes.raft.replication import SafeReplication
from tests.ports import free_port

NOOP = b"\x01"


class Follower:
    """A node that never ticks on its own; messages are handed to it and replies recorded."""

    def __init__(self, cls: type[SyncObj]) -> None:
        conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False,
                           dynamicMembershipChange=False)
        self.raft = cls(f"127.0.0.1:{free_port()}", [f"127.0.0.1:{free_port()}"], conf)
        self.leader = next(iter(self.raft.otherNodes))
        self.replies: list[dict[str, Any]] = []
        self.raft._SyncObj__transport.send = self._record

    def _record(self, _node: Any, message: dict[str, Any]) -> bool:
        self.replies.append(message)
        return True

    def append(self, term: int, prev: tuple[int, int], entries: list[tuple[int, int]],
               commit: int) -> dict[str, Any]:
        """Deliver an append of (index, term) no-op entries; the reply it got."""
        self.raft._SyncObj__onMessageReceived(self.leader, {
            "type": "append_entries", "term": term, "commit_index": commit,
            "prevLogIdx": prev[0], "prevLogTerm": prev[1],
            "entries": [(NOOP, index, t) for index, t in entries]})
        return self.replies[-1]

    def log(self) -> list[tuple[int, int]]:
        """(index, term) of every entry in the log."""
        return [(e[1], e[2]) for e in self.raft._SyncObj__getEntries(1)]

    @property
    def commit(self) -> int:
        return int(self.raft.raftCommitIndex)


@pytest.fixture(params=[SafeReplication, SyncObj], ids=["ours", "plain-pysyncobj"])
def follower(request: pytest.FixtureRequest) -> Iterator[Follower]:
    made = Follower(request.param)
    yield made
    made.raft._destroy()


def fixed(follower: Follower) -> bool:
    return isinstance(follower.raft, SafeReplication)


def term1(first: int, last: int) -> list[tuple[int, int]]:
    return [(i, 1) for i in range(first, last + 1)]


def test_a_late_append_never_drops_committed_entries(
        follower: Follower, caplog: pytest.LogCaptureFixture) -> None:
    follower.append(1, (1, 0), term1(2, 11), commit=11)
    follower.raft.doTick(0)
    assert follower.raft.raftLastApplied == 11
    caplog.set_level(logging.CRITICAL)
    # the leader re-sends an older batch (after a stale rejection); it arrives late
    reply = follower.append(1, (1, 0), term1(2, 5), commit=5)
    truncated = [r for r in caplog.records if "truncating already-applied" in r.getMessage()]
    if not fixed(follower):  # pysyncobj drops 6..11, committed and applied, unreplaced
        assert follower.log()[-1] == (5, 1) and follower.commit == 5 and truncated
        return
    assert follower.log() == [(1, 0), *term1(2, 11)]
    assert follower.commit == 11
    assert reply == {"type": "next_node_idx", "next_node_idx": 6, "reset": False,
                     "success": True}
    assert not truncated


def test_a_heartbeat_behind_our_log_confirms_only_what_it_covers(follower: Follower) -> None:
    follower.append(1, (1, 0), term1(2, 8), commit=3)
    reply = follower.append(1, (4, 1), [], commit=8)
    if not fixed(follower):
        assert follower.log()[-1] == (4, 1)  # 5..8 deleted though they match
        return
    assert follower.log()[-1] == (8, 1)
    assert follower.commit == 4  # only up to what the leader's append vouched for
    assert reply["success"] and reply["next_node_idx"] == 5


def test_a_real_conflict_above_the_commit_index_is_replaced(follower: Follower) -> None:
    follower.append(1, (1, 0), term1(2, 6), commit=3)
    reply = follower.append(2, (3, 1), [(4, 2), (5, 2)], commit=3)
    assert follower.log() == [(1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]
    assert reply["success"] and reply["next_node_idx"] == 6


def test_a_conflict_at_or_below_the_commit_index_is_refused(follower: Follower) -> None:
    follower.append(1, (1, 0), term1(2, 6), commit=6)
    before = len(follower.replies)
    follower.append(2, (1, 0), [(2, 2), (3, 2)], commit=6)
    if not fixed(follower):
        assert follower.log() == [(1, 0), (2, 2), (3, 2)]  # committed entries replaced
        return
    assert follower.log() == [(1, 0), *term1(2, 6)]
    assert follower.commit == 6
    assert len(follower.replies) == before


def test_rejections_point_the_leader_at_a_shared_index(follower: Follower) -> None:
    # a former leader: 2..3 committed, 4..5 written in its term 1 and never committed
    follower.append(1, (1, 0), term1(2, 5), commit=3)
    mismatch = follower.append(2, (5, 2), [(6, 2)], commit=9)
    too_short = follower.append(2, (9, 2), [(10, 2)], commit=9)
    assert mismatch["reset"] and not mismatch["success"]
    assert too_short["reset"] and not too_short["success"]
    if not fixed(follower):
        # one step back, then undone by the answer to the next batch: the repair loop
        assert (mismatch["next_node_idx"], too_short["next_node_idx"]) == (5, 6)
        return
    assert (mismatch["next_node_idx"], too_short["next_node_idx"]) == (4, 4)
    # once the tail is the new leader's, "after my last entry" is safe again
    assert follower.append(2, (3, 1), [(4, 2), (5, 2)], commit=3)["success"]
    assert follower.append(2, (9, 2), [(10, 2)], commit=9)["next_node_idx"] == 6


def test_a_large_entry_in_pieces_is_appended_once(follower: Follower) -> None:
    follower.append(1, (1, 0), term1(2, 3), commit=3)
    data = pickle.dumps((b"\x00" + b"x" * 100, 4, 1))
    for transmission, piece in (("start", data[:50]), ("finish", data[50:])):
        follower.raft._SyncObj__onMessageReceived(follower.leader, {
            "type": "append_entries", "term": 1, "commit_index": 3, "prevLogIdx": 3,
            "prevLogTerm": 1, "transmission": transmission, "data": piece})
    assert follower.log()[-1] == (4, 1)
    assert follower.replies[-1]["success"] and follower.replies[-1]["next_node_idx"] == 5
