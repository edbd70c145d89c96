"""Two fixes to pysyncobj's (pinned 0.3.17) log replication, kept on our side of its API.

1. A follower never truncates entries it already holds with the same term, and never any
   entry at or below its commit index. pysyncobj deletes everything after `prevLogIdx`
   whenever an append matches there, so an append that arrives late (the leader re-sends
   after a stale rejection) deletes newer entries, committed ones included, and may not
   bring them back in the same message. Raft only truncates at the first conflicting entry.
2. A follower that rejects an append points the leader straight at a place both logs
   share: its commit index + 1 (every entry up to there is committed, so the leader holds
   it too), or the end of its log when its last entry is of the current leader's term.
   pysyncobj answers "one entry back" for a term mismatch and "after my last entry" for a
   log too short; it sends several append batches in one round, and the "too short" answers
   to the later batches undid the step back every round, so a former leader holding
   uncommitted entries of its old term never caught up.
"""

from __future__ import annotations

import logging
from typing import Any

from pysyncobj import SyncObj

from mes.raft import wire

log = logging.getLogger(__name__)


class SafeReplication(SyncObj):  # type: ignore[misc]
    """pysyncobj with Raft's follower rule for appends and a log repair that converges."""

    # pysyncobj's transport calls this by its mangled name for every message.
    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        if (message.get("type") == "append_entries" and "prevLogIdx" in message
                and message["term"] >= self.raftCurrentTerm):
            regular = self._as_regular_append(message)
            if regular is not None:
                self._append(node, regular)
                return
        super()._SyncObj__onMessageReceived(node, message)

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,
                                  nextNodeIdx: int | None = None,
                                  success: bool = False) -> None:
        if reset and not success:
            nextNodeIdx = self._resume_index(nextNodeIdx)
        super()._SyncObj__sendNextNodeIdx(node, reset, nextNodeIdx, success)

    def _resume_index(self, mismatch_at: int | None) -> int | None:
        """Where the leader should resume after a rejection, in one step.

        Our entries up to the commit index are committed, so the leader holds them. Beyond
        it, only a tail written in the current leader's term is surely in the leader's log.
        """
        # (A commit index beyond our log's end, e.g. from a meta file that outlived a lost
        # journal, is no common ground: never point past what we hold.)
        resume = min(int(self.raftCommitIndex), int(self._SyncObj__getCurrentLogIndex())) + 1
        if mismatch_at is None:  # our log ends before the append's prevLogIdx
            if self._SyncObj__getCurrentLogTerm() == self.raftCurrentTerm:
                return None  # pysyncobj's answer: right after our last entry
            return resume
        return min(mismatch_at, resume)

    def _as_regular_append(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The append as one with plain `entries`; None while a large entry is still
        arriving in pieces (pysyncobj collects those)."""
        transmission = message.get("transmission")
        if transmission is None:
            return message
        if transmission != "finish":
            return None
        received: Any = self.__dict__["_SyncObj__recvTransmission"]
        if not isinstance(received, bytes):
            return None  # no start seen: pysyncobj's own handling decides
        entry = wire.loads(received + message["data"])
        self._SyncObj__recvTransmission = ""
        regular = {k: v for k, v in message.items() if k not in ("transmission", "data")}
        regular["entries"] = [entry]
        return regular

    def _append(self, node: Any, message: dict[str, Any]) -> None:
        """Handle a regular append: skip what is held, truncate only at a real conflict."""
        prev_index: int = message["prevLogIdx"]
        entries: list[Any] = list(message.get("entries", []))
        held = self._SyncObj__getEntries(prev_index)  # entries prev_index .. our last
        if not held or held[0][2] != message["prevLogTerm"]:
            super()._SyncObj__onMessageReceived(node, message)  # rejected as before
            return
        same = 0
        while same < len(entries) and same + 1 < len(held) and \
                held[same + 1][2] == entries[same][2]:
            same += 1
        first_new = prev_index + same + 1
        if same < len(entries) and same + 1 < len(held) and first_new <= self.raftCommitIndex:
            log.critical("refusing an append that conflicts with committed entry %d "
                         "(commit index %d)", first_new, self.raftCommitIndex)
            return
        if same < len(entries) or same + 1 == len(held):
            # New entries follow, or nothing follows what we hold: pysyncobj's own handling
            # then truncates only at the first conflict (if any) and appends the rest.
            super()._SyncObj__onMessageReceived(node, {
                **message, "prevLogIdx": prev_index + same, "prevLogTerm": held[same][2],
                "entries": entries[same:]})
            return
        # Everything sent is held and we hold more: keep it all, but only what the leader
        # has confirmed (up to `verified`) may be counted as committed or matched.
        verified = prev_index + same
        bookkeeping = {k: v for k, v in message.items() if k not in ("prevLogIdx", "entries")}
        bookkeeping["commit_index"] = min(message["commit_index"], verified)
        super()._SyncObj__onMessageReceived(node, bookkeeping)
        super()._SyncObj__sendNextNodeIdx(node, nextNodeIdx=verified + 1, success=True)
