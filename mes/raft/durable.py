"""pysyncobj made durable: the journal is synced before an entry counts as stored.

`DurableSyncObj` syncs its journal (mes.raft.journal) at the start of every tick, before the
leader counts itself toward the commit index, and at its end, right after the leader appended
new commands (so its sync overlaps the followers'). A follower's answers to appends wait, in
order, until the entries they acknowledge are synced; one sync serves every append that
arrived in the same poll (group commit). A node whose journal or snapshot is unreadable
starts with an empty log, does not vote until a leader has caught it up, and without peers
stops instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import pysyncobj.syncobj
from pysyncobj import SyncObj, SyncObjConf

from mes.raft.journal import SyncedJournal, open_journal, stop_unrecoverable
from mes.raft.snapshot import SnapshotFiles
from mes.raft.transport import GuardedTransport

log = logging.getLogger(__name__)

# pysyncobj's first journal entry of an empty log (a no-op at index 1, term 0).
EMPTY_LOG_ENTRY = (pysyncobj.syncobj._bchr(pysyncobj.syncobj._COMMAND_TYPE.NO_OP), 1, 0)
_journal_factory_lock = threading.Lock()


@contextlib.contextmanager
def _pysyncobj_journal(journal: SyncedJournal) -> Iterator[None]:
    """Make the SyncObj constructed inside this block use `journal` (it has no option for it)."""
    with _journal_factory_lock:
        original = pysyncobj.syncobj.createJournal
        pysyncobj.syncobj.createJournal = lambda _path: journal
        try:
            yield
        finally:
            pysyncobj.syncobj.createJournal = original


class DurableSyncObj(SyncObj):  # type: ignore[misc]
    """A SyncObj whose entries count as stored only once its journal is synced."""

    def __init__(self, self_address: str, peers: list[str], conf: SyncObjConf,
                 snapshots: SnapshotFiles | None = None, sync_trace: bool = False) -> None:
        self._held_replies: list[tuple[Any, bool, int, bool]] = []
        self.journal, lost = open_journal(conf.journalFile, sync_trace, can_rebuild=bool(peers))
        lost |= self._check_snapshot_present(conf.fullDumpFile, can_rebuild=bool(peers))
        # A node that lost its log must not vote until a leader has caught it up: its vote
        # could elect a candidate that lacks entries this node had acknowledged.
        self.rebuilding = lost
        if snapshots is not None:
            snapshots.on_unreadable = self._rebuild_from_peers if peers else None
            snapshots.on_loaded = self._align_journal
        with _pysyncobj_journal(self.journal):
            super().__init__(self_address, peers, conf, transportClass=GuardedTransport)
        if lost:  # the meta file may still name a commit index of the lost log
            self._SyncObj__raftCommitIndex = 1
        self.addOnTickCallback(self._sync_journal)

    def _check_snapshot_present(self, snapshot_file: str | None, can_rebuild: bool) -> bool:
        # A compacted journal without its snapshot would never apply anything again.
        first = self.journal[0][1] if len(self.journal) else 1
        if first <= 1 or (snapshot_file and os.path.exists(snapshot_file)):
            return False
        if not can_rebuild:
            stop_unrecoverable(f"the snapshot {snapshot_file} is missing but the journal starts "
                               f"at entry {self.journal[0][1]}, and this node has no peers to "
                               "rebuild from: stopping.")
        log.critical("the snapshot %s is missing but the journal starts at entry %d: this node "
                     "starts with an empty log and rebuilds from its peers",
                     snapshot_file, self.journal[0][1])
        self.journal.reset_empty(EMPTY_LOG_ENTRY)
        return True

    def _align_journal(self, raft_data: Any) -> None:
        """Compact a journal that starts before the snapshot being loaded.

        A snapshot is renamed into place before the journal is compacted to it: a node killed
        in between holds a journal that starts earlier. pysyncobj then clears the whole
        journal (entries after the snapshot too, which this node may have acknowledged);
        compacted to the snapshot's last two entries instead, the journal is kept.
        """
        last, before_last = raft_data[0], raft_data[1]  # pysyncobj's (last, before, cluster)
        journal = self.journal
        if not len(journal):
            return
        position = before_last[1] - journal[0][1]  # 0: the journal starts at the snapshot
        if not 0 < position < len(journal) - 1:
            return
        if (_same_entry(journal[position], before_last)
                and _same_entry(journal[position + 1], last)):
            log.warning("the journal starts at entry %d, before the snapshot (a stop between "
                        "the snapshot and the compaction): compacted to entry %d",
                        journal[0][1], before_last[1])
            journal.deleteEntriesTo(position)

    def _rebuild_from_peers(self) -> None:
        """Forget the log (its snapshot was unreadable): the leader sends a snapshot again."""
        self.journal.reset_empty(EMPTY_LOG_ENTRY)
        self._SyncObj__raftLastApplied = 1  # the database was emptied too
        self._SyncObj__raftCommitIndex = 1
        self.rebuilding = True

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        if self.rebuilding and message.get("type") == "request_vote":
            return  # no vote while rebuilding (see __init__)
        super()._SyncObj__onMessageReceived(node, message)

    def _check_rebuilt(self) -> None:
        leader_commit = self._SyncObj__leaderCommitIndex
        if (leader_commit is not None and self._getLeader() is not None
                and self.raftLastApplied >= leader_commit > 1):
            self.rebuilding = False
            log.warning("rebuilt from the leader up to entry %d: this node votes again",
                        leader_commit)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        # Entries that arrived during the last poll become durable before anything counts them.
        self._sync_journal()
        super()._onTick(timeToWait)

    def _sync_journal(self) -> None:
        if self.rebuilding:
            self._check_rebuilt()
        self.journal.sync()
        held, self._held_replies = self._held_replies, []
        leader = self._getLeader()
        for node, reset, next_idx, success in held:
            if node == leader:  # an answer to a former leader no longer means anything
                SyncObj._SyncObj__sendNextNodeIdx(self, node, reset, next_idx, success)

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,
                                  nextNodeIdx: int | None = None,
                                  success: bool = False) -> None:
        """pysyncobj's answer to an append, held until the journal holding it is synced."""
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1
        if self.journal.dirty or self._held_replies:
            self._held_replies.append((node, reset, nextNodeIdx, success))
        else:
            SyncObj._SyncObj__sendNextNodeIdx(self, node, reset, nextNodeIdx, success)


def _same_entry(entry: Any, other: Any) -> bool:
    """Whether two journal entries (command, index, term) are the same."""
    return (bytes(entry[0]) == bytes(other[0])
            and (entry[1], entry[2]) == (other[1], other[2]))
