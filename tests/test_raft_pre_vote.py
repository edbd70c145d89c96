"""Pre-vote (issue 20 §3) on in-process Raft nodes: the rules a node answers by, and
elections that still happen (first leader, failover) when every node asks first.

The partition case (an isolated node keeps its term, the leader keeps leading when it comes
back) runs on real processes with iptables: tests/test_cluster_pre_vote.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.monotonic import monotonic as raft_clock

from mes.raft.node import RaftNode, RaftTuning, build_conf
from mes.raft.pre_vote import PRE_VOTE_LEVEL
from mes.raft.snapshot import SnapshotFiles
from mes.state.machine import StateMachine
from tests.polling import wait_for
from tests.ports import free_port


class Peer:
    """Stands for a node a message came from (pysyncobj's node: an `id`)."""

    def __init__(self, address: str) -> None:
        self.id = address


def node_at(path: Path, address: str, peers: list[str], auto_tick: bool = True) -> RaftNode:
    machine = StateMachine()
    snapshots = SnapshotFiles(machine)
    conf = build_conf(path, snapshots, 100_000, 3600.0, RaftTuning(), address)
    conf.autoTick = auto_tick
    return RaftNode(address, peers, machine, conf, snapshots)


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[tuple[RaftNode, list[dict[str, Any]]]]:
    """A node that never ticks by itself (no election of its own, no peer reached), and
    the messages it sends."""
    address, peers = (f"127.0.0.1:{free_port()}" for _ in range(2))
    node = node_at(tmp_path / "q", address, [peers, "127.0.0.1:9"], auto_tick=False)
    sent: list[dict[str, Any]] = []
    transport = node._SyncObj__transport

    def send(_node: Any, message: dict[str, Any]) -> bool:
        sent.append(dict(message))
        return True

    transport.send = send
    try:
        yield node, sent
    finally:
        node.destroy()  # without a tick thread: closes at once


def ask(node: RaftNode, sent: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The answer `node` sends to a pre-vote request of `fields`."""
    sent.clear()
    node._listened_at = raft_clock()  # it reads its sockets now
    message = {"type": "pre_vote", "term": node.raftCurrentTerm + 1, "round": 7,
               "last_log_index": 10, "last_log_term": 1, **fields}
    node._SyncObj__onMessageReceived(Peer("127.0.0.1:10"), message)
    assert len(sent) == 1 and sent[0]["type"] == "pre_vote_response", sent
    return sent[0]


def follow_a_leader(node: RaftNode) -> Any:
    """Make `node` a pre-voting follower of one of its peers, connected to both; the
    leader's node."""
    node.follow_cluster_level(PRE_VOTE_LEVEL)
    node._SyncObj__connectedNodes.update(node.otherNodes)
    leader = next(iter(node.otherNodes))
    node._SyncObj__raftLeader = leader
    return leader


def test_a_node_says_yes_only_without_a_leader_and_to_a_log_as_recent(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    node, sent = quiet
    node._SyncObj__setCurrentTerm(3, None)
    log_term, log_index = (node._SyncObj__getCurrentLogTerm(),
                           node._SyncObj__getCurrentLogIndex())

    granted = ask(node, sent, term=4, last_log_term=log_term, last_log_index=log_index)
    assert granted == {"type": "pre_vote_response", "term": 3, "round": 7, "granted": True}
    # An older log (index, or term) is refused.
    assert not ask(node, sent, term=4, last_log_term=log_term,
                   last_log_index=log_index - 1)["granted"]
    assert not ask(node, sent, term=4, last_log_term=log_term - 1,
                   last_log_index=log_index + 100)["granted"]
    # A stale term is refused, and the answer carries this node's term.
    stale = ask(node, sent, term=2, last_log_term=log_term, last_log_index=log_index)
    assert stale["granted"] is False and stale["term"] == 3
    # Nothing of the node changed by answering: no term, no vote.
    assert node.raftCurrentTerm == 3 and node._SyncObj__votedForNodeId is None


def test_a_node_that_heard_its_leader_says_no(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    node, sent = quiet
    log_term, log_index = (node._SyncObj__getCurrentLogTerm(),
                           node._SyncObj__getCurrentLogIndex())
    node._leader_heard = time.monotonic()
    answer = ask(node, sent, last_log_term=log_term, last_log_index=log_index)
    assert answer["granted"] is False
    node._leader_heard = time.monotonic() - 2 * RaftTuning().election_min
    assert ask(node, sent, last_log_term=log_term, last_log_index=log_index)["granted"]


@pytest.mark.parametrize("garbage", [
    {"last_log_index": [1]}, {"last_log_index": -3}, {"last_log_term": 2.5},
    {"last_log_term": 2**70}, {"round": {"x": 1}},
])
def test_a_malformed_request_is_refused_and_raises_nothing(
        quiet: tuple[RaftNode, list[dict[str, Any]]], garbage: dict[str, Any]) -> None:
    node, sent = quiet
    term = node.raftCurrentTerm
    answer = ask(node, sent, **garbage)
    if "round" not in garbage:
        assert answer["granted"] is False
    assert node.raftCurrentTerm == term and node._SyncObj__votedForNodeId is None


@pytest.mark.parametrize("kind", ["pre_vote", "pre_vote_response", "request_vote",
                                  "append_entries"])
@pytest.mark.parametrize("term", ["9", None, True, -1, 2**64, 1.0])
def test_a_message_with_a_malformed_term_is_dropped_unread(
        quiet: tuple[RaftNode, list[dict[str, Any]]], kind: str, term: Any) -> None:
    """pysyncobj would store such a term (2**64 then breaks its 64-bit journal header)."""
    node, sent = quiet
    before = node.raftCurrentTerm
    sent.clear()
    node._SyncObj__onMessageReceived(Peer("127.0.0.1:10"), {
        "type": kind, "term": term, "round": 1, "granted": False, "last_log_index": 1,
        "last_log_term": 1, "commit_index": 0})
    assert sent == [] and node.raftCurrentTerm == before
    assert node._SyncObj__votedForNodeId is None


def test_a_no_of_a_higher_term_is_taken_and_a_yes_of_another_round_is_not(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    node, sent = quiet
    term = node.raftCurrentTerm
    node._ask()  # what its tick does once its election timeout passed
    requests = [m for m in sent if m["type"] == "pre_vote"]
    assert len(requests) == 2 and node.raftCurrentTerm == term  # both peers, no term raised
    assert requests[0]["term"] == term + 1
    number = requests[-1]["round"]
    peer = Peer("127.0.0.1:10")
    receive = node._SyncObj__onMessageReceived
    receive(peer, {"type": "pre_vote_response", "term": 1, "round": number - 1,
                   "granted": True})
    assert node._won is None  # a yes to an older round counts for nothing
    receive(peer, {"type": "pre_vote_response", "term": 12, "round": number,
                   "granted": False})
    assert node.raftCurrentTerm == 12 and node._round is None
    assert node.pre_vote_status()["elections"] == 0


def test_a_node_that_hears_a_leader_of_a_lower_term_holds_the_plain_election(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    """At a higher term than the leader it ignores the leader's appends, and the others
    say no while they hear it: only pysyncobj's election (a higher term) deposes it."""
    node, sent = quiet
    node.follow_cluster_level(PRE_VOTE_LEVEL)
    node._SyncObj__setCurrentTerm(9, None)
    node._SyncObj__onMessageReceived(Peer("127.0.0.1:10"), {
        "type": "append_entries", "term": 2, "commit_index": 0})
    connected = node._SyncObj__connectedNodes
    connected.update(node.otherNodes)  # as if its links were up
    node._SyncObj__raftElectionDeadline = 0.0
    sent.clear()
    node.doTick(0.0)
    assert node.raftCurrentTerm == 10  # the plain election, without asking first
    assert {m["type"] for m in sent} == {"request_vote"}
    assert node.pre_vote_status()["rounds"] == 0
    # One is enough: the next election (this one failed) is asked for first again.
    node._SyncObj__raftElectionDeadline = 0.0
    sent.clear()
    node.doTick(0.0)
    assert node.raftCurrentTerm == 10 and {m["type"] for m in sent} == {"pre_vote"}
    assert node.pre_vote_status()["rounds"] == 1


def test_a_follower_whose_timeout_passed_forgets_its_leader_and_asks_on_raft_time(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    node, sent = quiet
    follow_a_leader(node)
    node._SyncObj__raftElectionDeadline = 0.0
    sent.clear()
    node.doTick(0.0)
    assert node._getLeader() is None  # so /health and writes see "no leader" at once
    assert node.raftCurrentTerm == 0 and [m["type"] for m in sent] == ["pre_vote"] * 2
    # The next deadline is on pysyncobj's clock (CLOCK_MONOTONIC_RAW), within a timeout.
    left = node._SyncObj__raftElectionDeadline - raft_clock()
    assert 0 < left <= RaftTuning().election_max


def test_a_node_that_was_not_listening_says_no(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    # A paused process (a full garbage collection of seconds) reads its sockets late: the
    # leader's heartbeats of the pause may wait behind this request, unread.
    node, sent = quiet
    log_term, log_index = (node._SyncObj__getCurrentLogTerm(),
                           node._SyncObj__getCurrentLogIndex())
    assert ask(node, sent, last_log_term=log_term, last_log_index=log_index)["granted"]
    sent.clear()
    node._listened_at = raft_clock() - 3.0
    node._SyncObj__onMessageReceived(Peer("127.0.0.1:10"), {
        "type": "pre_vote", "term": node.raftCurrentTerm + 1, "round": 8,
        "last_log_index": log_index, "last_log_term": log_term})
    assert [m["granted"] for m in sent] == [False]


def test_a_follower_asks_only_after_reading_its_sockets_past_the_deadline(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    # bench/big_orders.py: a follower asked "no leader heard for 3.16 s" 30 ms after a
    # 3.13 s collection, before reading the heartbeats that waited in its sockets.
    node, sent = quiet
    leader = follow_a_leader(node)
    node._listened_at = raft_clock() - 3.0  # the pause began after its last poll
    node._SyncObj__raftElectionDeadline = raft_clock() - 2.5
    sent.clear()
    node._SyncObj__connectedToAnyone()
    assert sent == [] and node.pre_vote_status()["rounds"] == 0
    assert node._getLeader() == leader  # nothing forgotten yet
    node.doTick(0.0)  # its poll reads the sockets (nothing waits here): now it may ask
    assert sent == [] and node.pre_vote_status()["rounds"] == 0
    node._SyncObj__raftElectionDeadline = node._listened_at - 0.1
    sent.clear()
    node.doTick(0.0)
    assert [m["type"] for m in sent] == ["pre_vote"] * 2
    assert node.pre_vote_status()["rounds"] == 1


def test_a_node_rebuilding_its_log_says_no(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    node, sent = quiet
    log_term, log_index = (node._SyncObj__getCurrentLogTerm(),
                           node._SyncObj__getCurrentLogIndex())
    assert ask(node, sent, last_log_term=log_term, last_log_index=log_index)["granted"]
    node.rebuilding = True  # it would refuse the vote itself (mes.raft.durable)
    assert not ask(node, sent, last_log_term=log_term, last_log_index=log_index)["granted"]


def test_a_restarted_node_remembers_that_the_cluster_pre_votes(tmp_path: Path) -> None:
    peers = [f"127.0.0.1:{free_port()}", "127.0.0.1:9"]
    first = node_at(tmp_path / "r", f"127.0.0.1:{free_port()}", peers, auto_tick=False)
    try:
        assert first.pre_vote_status()["enabled"] is False
        first.follow_cluster_level(PRE_VOTE_LEVEL)
    finally:
        first.destroy()
    again = node_at(tmp_path / "r", f"127.0.0.1:{free_port()}", peers, auto_tick=False)
    try:
        assert again.pre_vote_status()["enabled"] is True  # before any state is read
    finally:
        again.destroy()


def test_pre_vote_follows_the_cluster_version(
        quiet: tuple[RaftNode, list[dict[str, Any]]]) -> None:
    node, _ = quiet
    assert node.pre_vote_status()["enabled"] is False
    node.follow_cluster_level(PRE_VOTE_LEVEL - 1)
    assert node.pre_vote_status()["enabled"] is False
    node.follow_cluster_level(PRE_VOTE_LEVEL)
    assert node.pre_vote_status()["enabled"] is True


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[RaftNode]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes: list[RaftNode] = []
    try:
        for i, address in enumerate(addresses):
            node = node_at(tmp_path / f"n{i}", address, [a for a in addresses if a != address])
            node.follow_cluster_level(PRE_VOTE_LEVEL)
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes:
            node.destroy_synchronous()


def leader_of(nodes: list[RaftNode]) -> RaftNode | None:
    leaders = [n for n in nodes if n.is_leader()]
    return leaders[0] if len(leaders) == 1 else None


def test_nodes_that_ask_first_still_elect_and_fail_over(trio: list[RaftNode]) -> None:
    wait_for(lambda: leader_of(trio) is not None, 30, "a leader elected through pre-votes")
    first = leader_of(trio)
    assert first is not None
    elections = sum(n.pre_vote_status()["elections"] for n in trio)
    # Every election was won in pre-votes first (two nodes may win theirs at once and
    # split the votes of one term): no term without a won round.
    assert 1 <= first.raftCurrentTerm <= elections
    term = first.raftCurrentTerm
    # A quiet leader: followers keep hearing it, so nobody asks while it lives.
    rounds = [n.pre_vote_status()["rounds"] for n in trio]
    time.sleep(1.0)  # (a span with nothing to wait for: it checks that nothing happens)
    assert [n.pre_vote_status()["rounds"] for n in trio] == rounds
    assert all(n.raftCurrentTerm == term for n in trio)

    first.destroy_synchronous()
    trio.remove(first)
    rest = [n for n in trio if n is not first]
    wait_for(lambda: leader_of(rest) is not None, 30, "a new leader after the first stopped")
    second = leader_of(rest)
    assert second is not None and second.raftCurrentTerm > term
    assert all(n.pre_vote_status()["rounds"] > 0 for n in rest if n is second)


def test_a_leader_hands_off_to_a_caught_up_follower_and_a_follower_does_nothing(
        trio: list[RaftNode]) -> None:
    # What a leader does before its scheduled full collection (mes/full_collections.py).
    wait_for(lambda: leader_of(trio) is not None, 30, "a leader")
    first = leader_of(trio)
    assert first is not None
    term = first.raftCurrentTerm
    follower = next(n for n in trio if n is not first)
    follower.hand_off()  # not leading: nothing
    wait_for(lambda: not follower._hand_off_asked, 10, "the follower's tick to see it")
    assert leader_of(trio) is first and first.raftCurrentTerm == term
    wait_for(lambda: all(n.raftLastApplied == first.raftLastApplied for n in trio), 10,
             "every node caught up")
    first.hand_off()
    wait_for(lambda: (leader_of(trio) or first) is not first, 30, "another node to lead")
    second = leader_of(trio)
    assert second is not None and second.raftCurrentTerm == term + 1
    assert not first.is_leader()
