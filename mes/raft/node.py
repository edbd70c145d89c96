"""The Raft node: pysyncobj's engine with one replicated entry point into the state machine."""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObjConf, SyncObjException, replicated
from pysyncobj.pipe_notifier import PipeNotifier

from mes.raft import transport, wire
from mes.raft.applied import AppliedView
from mes.raft.durable import DurableSyncObj
from mes.raft.pre_vote import PreVote
from mes.raft.replication import SafeReplication
from mes.raft.snapshot import SnapshotFiles
from mes.state.machine import Outcome, StateMachine

# Nothing from the network names a callable (mes.raft.wire); frames are bounded before they
# are buffered (mes.raft.transport).
wire.install()
transport.install()

# How often the Raft port is tried before the node gives up on it.
BIND_ATTEMPTS = 3

log = logging.getLogger(__name__)


def _stagger(address: str | None, spread: int) -> int:
    """A fixed offset in [0, spread) that differs between nodes."""
    return zlib.crc32((address or "").encode()) % spread if spread > 0 else 0


class RaftBindError(Exception):
    """The Raft port could not be bound (taken, or not an address of this machine)."""


@dataclass(frozen=True)
class RaftTuning:
    """Timing of elections and heartbeats (seconds)."""

    heartbeat: float = 0.05
    election_min: float = 0.3
    election_max: float = 0.6
    # Idle follower-to-follower links must never time out: a dropped link loses the first
    # RequestVote after a leader dies (docs/architecture.md), so the first election round fails.
    connection_timeout: float = 10 * 24 * 3600.0
    connection_retry: float = 0.5


def build_conf(data_dir: Path, snapshots: SnapshotFiles | None, snapshot_entries: int,
               snapshot_interval: float, tuning: RaftTuning,
               bind_address: str | None = None, password: str | None = None) -> SyncObjConf:
    """pysyncobj configuration: journal and full dump in DATA_DIR, no batching, fast elections.

    Without `snapshots` pysyncobj pickles its own object (the benchmark's raw baseline).
    With `password` every Raft message is encrypted and authenticated (Fernet: AES-CBC and
    HMAC-SHA256, fresh per-connection keys against replays): a peer without it is dropped
    at its first message, before anything it sent is unpickled.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    return SyncObjConf(
        journalFile=str(data_dir / "raft.journal"),
        fullDumpFile=str(data_dir / "raft.snapshot"),
        serializer=snapshots.serialize if snapshots else None,
        deserializer=snapshots.deserialize if snapshots else None,
        serializeChecker=snapshots.check if snapshots else None,
        useFork=False,
        appendEntriesUseBatch=False,
        commandsWaitLeader=False,
        appendEntriesPeriod=tuning.heartbeat,
        raftMinTimeout=tuning.election_min,
        raftMaxTimeout=tuning.election_max,
        connectionTimeout=tuning.connection_timeout,
        connectionRetryTime=tuning.connection_retry,
        leaderFallbackTimeout=max(tuning.election_max * 2, 1.0),
        # Start at half the bound (entries that arrive while a snapshot is written in the
        # background stay in the log, and the bound must hold with them), a little later on
        # some nodes than on others so that they do not all snapshot at the same moment.
        logCompactionMinEntries=max(snapshot_entries // 2 + _stagger(bind_address,
                                                                     snapshot_entries // 4), 2),
        logCompactionMinTime=snapshot_interval,
        # pysyncobj's split lets each node compact only in its own slice of every interval, so
        # the entry bound waited for that slice (73,919 entries with a bound of 5,000). Only a
        # memory copy of the database happens on the Raft thread now (mes.raft.snapshot), so
        # nodes may compact together, as soon as the bound is crossed.
        logCompactionSplit=False,
        # Nodes are added and removed through the API (mes/raft/membership.py).
        dynamicMembershipChange=True,
        # Listen where the node's address says (pysyncobj would take 0.0.0.0), and give up
        # after a few tries so that a taken port stops the node instead of a silent retry.
        bindAddress=bind_address,
        maxBindRetries=BIND_ATTEMPTS,
        bindRetryTime=0.2,
        autoTick=True,
        password=password,
    )


class RaftNode(AppliedView, PreVote, SafeReplication, DurableSyncObj):
    """A pysyncobj node whose only replicated method applies a command to the state machine.

    Composed of small overrides of pysyncobj (each chains to the next through super()):
    AppliedView (applied index and state read together), PreVote (no term raised without a
    majority's pre-votes), SafeReplication (follower append rule, log repair that
    converges) and DurableSyncObj (an entry counts as stored only once its journal is
    synced).
    """

    def __init__(self, self_address: str, peers: list[str], machine: StateMachine,
                 conf: SyncObjConf, snapshots: SnapshotFiles | None = None,
                 sync_trace: bool = False) -> None:
        self._machine = machine
        # Beside the journal: the cluster reached the pre-vote level (mes.raft.pre_vote).
        self.pre_vote_marker = Path(conf.journalFile).parent / "pre-vote"
        super().__init__(self_address, peers, conf, snapshots, sync_trace)
        try:
            self.waitBinded()
        except SyncObjException:
            self.destroy()
            where = conf.bindAddress or self_address
            raise RaftBindError(f"cannot listen for Raft on {where} (port taken, or not an "
                                "address of this machine)") from None
        self._hand_off_asked = False
        self.addOnTickCallback(self._hand_off_if_asked)
        if not peers:
            # pysyncobj computes the commit index before it appends new commands and then
            # sleeps in poll(); in a cluster the followers' replies wake it, alone nothing
            # does, so every write would wait a whole tick. Wake it while writes are pending.
            self._wakeup = PipeNotifier(self._poller)
            self.addOnTickCallback(self._wake_if_uncommitted)

    def destroy_synchronous(self) -> None:
        """Stop the Raft thread, close its connections and wait for it; then close the wake-up
        pipes, which pysyncobj leaves open (four descriptors per node otherwise leak)."""
        super().destroy_synchronous()
        notifiers = [getattr(self, "_SyncObj__pipeNotifier", None),
                     getattr(self, "_wakeup", None)]
        for notifier in notifiers:
            if notifier is None:
                continue
            for name in ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW"):
                fd = getattr(notifier, name, None)
                if isinstance(fd, int):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    setattr(notifier, name, -1)

    def _wake_if_uncommitted(self) -> None:
        # pysyncobj is pinned (0.3.17): its last log index is only reachable by this name.
        last_index: int = self._SyncObj__getCurrentLogIndex()
        if last_index > self.raftCommitIndex and self._isLeader():
            self._wakeup.notify()

    def is_leader(self) -> bool:
        """Whether this node is the Raft leader now."""
        return bool(self._isLeader())

    def hand_off(self) -> None:
        """Ask the Raft thread to hand leadership to the most caught-up follower (Raft's
        TimeoutNow; any thread; nothing happens unless this node leads peers)."""
        self._hand_off_asked = True

    def _hand_off_if_asked(self) -> None:
        if not self._hand_off_asked:
            return
        self._hand_off_asked = False
        if self._isLeader() and self.otherNodes:
            self.transferLeadership(callback=_log_hand_off)

    def members(self) -> list[str]:
        """The Raft addresses of the cluster's nodes as this node knows them, itself included
        (they change as nodes are added and removed)."""
        return sorted({str(self.selfNode.id), *(str(n.id) for n in self.otherNodes)})

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, command: Mapping[str, Any]) -> Outcome:
        """Committed on a majority and applied on every node in log order."""
        # pysyncobj raises raftLastApplied after this returns: this entry is the next one.
        outcome = self._machine.apply(command, index=int(self.raftLastApplied) + 1)
        self.note_applied()
        return outcome


def _log_hand_off(_result: Any, error: int) -> None:
    if error != FAIL_REASON.SUCCESS:
        log.info("leadership not handed off (reason %s): no follower has caught up", error)
