"""Pre-vote (Raft thesis §9.6) in front of pysyncobj's (pinned 0.3.17) elections.

A follower whose election timeout passes first asks the others whether they would vote for
it, without raising its term. It starts pysyncobj's election (term + 1) only once a
majority said yes. A node says yes when it heard no leader within the minimum election
timeout, is not the leader itself, and the asking node's log is at least as recent as its
own; saying yes changes nothing on the node that says it. So a node cut off from the others
(a partition, a pause) keeps its term, and when it comes back it does not depose a leader
that did nothing wrong.

Nodes of releases before pre-vote ignore these messages, so a node asks only while
`enabled`: the node turns it on once the cluster version (every member's release) has
reached PRE_VOTE_LEVEL, and remembers that in its Raft directory (the level is never
lowered), so a restarted node asks from its first election on. Every node of this release
answers, enabled or not; a node rebuilding its log from the leader says no, as it would to
the vote. A leadership transfer (TimeoutNow from the leader) skips the round, as the thesis
says. A node whose election timeout passed forgets its leader (as pysyncobj does when it
starts an election), so it answers "no leader" while it asks.

The round is started from pysyncobj's own election condition: `__connectedToAnyone` is
called only once the election deadline passed (syncobj.py, `_onTick`), so answering False
there puts pysyncobj's election off exactly, on pysyncobj's clock.

A node that was not listening does neither. A pause of the whole process (a full garbage
collection, SIGSTOP, swapping) stops the Raft thread wherever it is; when it runs again
the leader's heartbeats of that time wait unread in its sockets, and pysyncobj checks the
election deadline before it reads them. So a node asks only once it has read its sockets
after its deadline passed (one tick later), and it says no while the last time it read
them is longer ago than the minimum election timeout. `bench/big_orders.py` measured a
follower asking "no leader heard for 3.16 s" 30 ms after a 3.13 s collection.

A "no" from a node of a higher term carries that term and this node takes it, as Raft does
for any message of a higher term; otherwise a node with a stale term but the most recent
log could never be elected. The answer carries the answering node's own term.

A node at a higher term than the leader (it took the term while cut off, or before the
cluster turned pre-vote on) ignores that leader's appends, and pysyncobj's replies carry no
term that would depose it; the others keep hearing the leader and say no. So a node whose
last message from a leader was of a lower term holds the plain election, which raises the
leader's term (it steps down) and lets the node of the most recent log be elected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as raft_clock

log = logging.getLogger(__name__)

# The data level at which every member runs a release that answers pre-votes (0.5.0).
PRE_VOTE_LEVEL = 5
# Terms and log positions beyond this are malformed (pysyncobj stores them as 64-bit).
_LARGEST = 2**62

_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2


@dataclass
class _Round:
    """One round of pre-vote requests: the term it proposes and who said yes."""

    number: int
    term: int
    granted: set[str] = field(default_factory=set)


class PreVote(SyncObj):  # type: ignore[misc]
    """pysyncobj whose follower asks for a majority's pre-votes before it raises its term."""

    # A file whose presence says the cluster reached PRE_VOTE_LEVEL (set by the node).
    pre_vote_marker: Path | None = None
    _SyncObj__raftLeader: Any  # pysyncobj's, read and cleared here

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before pysyncobj's constructor: its transport may deliver messages at once.
        marker = self.pre_vote_marker
        self.pre_vote_enabled = marker is not None and marker.exists()
        self._round: _Round | None = None
        self._rounds = 0
        self._won: int | None = None  # the term a won round proposed, until it is used
        self._won_at = 0.0
        self._elections_after_pre_vote = 0
        self._leader_heard = 0.0  # on time.monotonic()
        self._listened_at = raft_clock()  # what had arrived by then was read
        self._lower_term_leader = False
        super().__init__(*args, **kwargs)

    def follow_cluster_level(self, level: int) -> None:
        """Ask for pre-votes once the cluster version says every member answers them."""
        if level < PRE_VOTE_LEVEL or self.pre_vote_enabled:
            return
        log.info("pre-vote on: the cluster version is %d", level)
        self.pre_vote_enabled = True
        marker = self.pre_vote_marker
        if marker is not None and not marker.exists():
            try:
                marker.write_text(f"cluster version {level}: every member answers pre-votes\n")
            except OSError as exc:
                log.warning("cannot remember that pre-vote is on (%s): a restart asks "
                            "again once the cluster version is read", exc)

    def pre_vote_status(self) -> dict[str, Any]:
        """Whether this node asks for pre-votes, and how many rounds it asked and won."""
        return {"enabled": self.pre_vote_enabled, "rounds": self._rounds,
                "elections": self._elections_after_pre_vote}

    # --- listening ----------------------------------------------------------------------

    def _onTick(self, timeToWait: float = 0.0) -> None:
        # pysyncobj's tick ends with the poll that reads every socket: once it is over, all
        # that had arrived when the tick began was read (a pause anywhere in the tick,
        # the poll's own callbacks included, falls after that instant).
        began = raft_clock()
        super()._onTick(timeToWait)
        self._listened_at = began

    def _deaf(self) -> bool:
        """Whether this node has not read its sockets for a minimum election timeout."""
        return bool(raft_clock() - self._listened_at > self._getConf().raftMinTimeout)

    # --- asking -----------------------------------------------------------------------

    def _SyncObj__connectedToAnyone(self) -> bool:
        # pysyncobj asks this only when its election deadline passed, as a follower or
        # candidate: False puts its election off; True lets it run in this tick.
        if not super()._SyncObj__connectedToAnyone():
            return False
        if self._listened_at < self._SyncObj__raftElectionDeadline:
            return False  # not read since the deadline passed: a leader's message may wait
        if self._take_won_round():
            return True
        if self._lower_term_leader:
            self._lower_term_leader = False  # one plain election deposes that leader
            return True
        if not self.pre_vote_enabled or self._SyncObj__transferInProgress:
            return True
        self._forget_leader()
        self._ask()
        return self._take_won_round()  # won at once: a majority of one (a lone node)

    def _take_won_round(self) -> bool:
        """Whether a round was won for the next term within the longest election timeout;
        if so it is used up by the election pysyncobj now holds."""
        if not (self._won is not None and self._won == self.raftCurrentTerm + 1
                and raft_clock() - self._won_at < self._getConf().raftMaxTimeout):
            return False
        self._won, self._round = None, None
        self._elections_after_pre_vote += 1
        return True

    def _forget_leader(self) -> None:
        """No leader heard for an election timeout: none is known (pysyncobj forgets it
        only when it starts an election, which the round puts off)."""
        if self._SyncObj__raftLeader is not None:
            self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()

    def _ask(self) -> None:
        """Start a round: ask every other node, and put pysyncobj's election off until the
        round is won or its time is up (a new round then)."""
        self._rounds += 1
        term = int(self.raftCurrentTerm) + 1
        log.info("no leader heard for %.2f s: asking for pre-votes for term %d (round %d)",
                 time.monotonic() - self._leader_heard, term, self._rounds)
        self._round = _Round(self._rounds, term, {str(self.selfNode.id)})
        self._SyncObj__raftElectionDeadline = (raft_clock()
                                               + self._SyncObj__generateRaftTimeout())
        message = {"type": "pre_vote", "term": term, "round": self._rounds,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in self.otherNodes:
            self._SyncObj__transport.send(node, message)
        self._count()

    def _count(self) -> None:
        """The round is won with a majority of the members' yes."""
        round_ = self._round
        if round_ is None or len(round_.granted) * 2 <= len(self.otherNodes) + 1:
            return
        self._won, self._won_at = round_.term, raft_clock()
        self._round = None
        self._SyncObj__raftElectionDeadline = 0.0  # the next tick starts the election

    # --- answering --------------------------------------------------------------------

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        if "term" in message and _integer(message["term"]) < 0:
            log.warning("dropped a Raft %r message with a malformed term",
                        str(message.get("type"))[:40])
            return
        kind = message.get("type")
        if kind == "pre_vote":
            self._answer(node, message)
            return
        if kind == "pre_vote_response":
            self._on_answer(node, message)
            return
        if kind == "append_entries":
            # A leader of a lower term is one this node, at its higher term, ignores, and
            # pysyncobj's replies carry no term to depose it: only an election does.
            self._lower_term_leader = message["term"] < self.raftCurrentTerm
            if not self._lower_term_leader:
                self._leader_heard = time.monotonic()
        super()._SyncObj__onMessageReceived(node, message)

    def _answer(self, node: Any, message: dict[str, Any]) -> None:
        term, last_index, last_term = (_integer(message.get(k)) for k in
                                       ("term", "last_log_index", "last_log_term"))
        current = int(self.raftCurrentTerm)
        heard = time.monotonic() - self._leader_heard < self._getConf().raftMinTimeout
        mine = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        granted = (min(term, last_index, last_term) >= 0  # a malformed field: no
                   and term >= current and not heard and not self._deaf()
                   and self._SyncObj__raftState != _LEADER
                   and not getattr(self, "rebuilding", False)  # it would refuse the vote
                   and (last_term, last_index) >= mine)
        self._SyncObj__transport.send(node, {
            "type": "pre_vote_response", "term": current,
            "round": message.get("round"), "granted": granted})

    def _on_answer(self, node: Any, message: dict[str, Any]) -> None:
        term = _integer(message.get("term"))
        if self._SyncObj__raftState == _LEADER:
            return  # a late answer to a round before this node was elected
        if term > self.raftCurrentTerm and message.get("granted") is not True:
            # A member is at a higher term: take it (as Raft does for any message of one).
            self._SyncObj__setCurrentTerm(term, None)
            self._SyncObj__setState(_FOLLOWER)
            self._forget_leader()
            self._round = None
            return
        round_ = self._round
        if (round_ is None or message.get("round") != round_.number
                or message.get("granted") is not True):
            return
        round_.granted.add(str(node.id))
        self._count()


def _integer(value: Any) -> int:
    """A message's term or log position; anything else (another type, negative, beyond 64
    bits) counts as -1: never granted, never stored."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _LARGEST:
        return value
    return -1
