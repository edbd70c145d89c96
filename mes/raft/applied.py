"""What this node has applied: consistent reads at an applied index, and apply progress."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pysyncobj import FAIL_REASON, SyncObj
from pysyncobj.syncobj import SyncObjExceptionWrongVer

T = TypeVar("T")
log = logging.getLogger(__name__)


class AppliedView(SyncObj):  # type: ignore[misc]
    """Serialises pysyncobj's apply step with readers that need the applied index with the state.

    pysyncobj raises its applied index only after the applied command returns, so a reader
    could otherwise see a state one command ahead of the index. Also tracks when applying
    last made progress, for readiness.
    """

    # Seconds of applying per tick: less than the heartbeat period (0.05 s) leaves room for
    # heartbeats and answers well within the shortest election timeout (0.3 s).
    apply_budget = 0.04

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._apply_lock = threading.RLock()
        self._seen_applied = 0
        self._progress_at = time.monotonic()
        super().__init__(*args, **kwargs)
        self.addOnTickCallback(self._note_progress)

    # pysyncobj (pinned 0.3.17) calls these private steps by their mangled names.
    def _SyncObj__applyLogEntries(self) -> bool:
        """Apply committed entries for at most `apply_budget` seconds of this tick.

        pysyncobj applies every committed entry in one tick: a backlog (a burst of orders
        of 100 jobs, a replay) held the tick for seconds, and with it the leader's
        heartbeats and the followers' answers, so elections followed. This is pysyncobj's
        step (pinned 0.3.17: tests/test_raft_pysyncobj_pins.py) with a time budget: what is
        left waits for the next tick, which comes at once (the poll is woken) after the
        network had its turn. The commit index is never changed: readiness reads it.
        """
        applied = int(self.raftLastApplied)
        commit = int(self.raftCommitIndex)
        if commit <= applied:
            return False
        deadline = time.monotonic() + self.apply_budget
        waiting = self._SyncObj__commandsWaitingCommit
        with self._apply_lock:
            for entry in self._SyncObj__getEntries(applied + 1, commit - applied):
                term = entry[2]
                subscribers = waiting.pop(entry[1], [])
                try:
                    result = self._SyncObj__doApplyCommand(entry[0])
                except SyncObjExceptionWrongVer as exc:  # as pysyncobj: logged, not counted
                    log.error("request to switch to unsupported code version (%s)", exc)
                    continue
                for subscribed_term, callback in subscribers:
                    if subscribed_term == term:
                        callback(result, FAIL_REASON.SUCCESS)
                    else:
                        callback(None, FAIL_REASON.DISCARDED)
                self._SyncObj__raftLastApplied = int(self.raftLastApplied) + 1
                if time.monotonic() >= deadline:
                    break
        if int(self.raftLastApplied) < commit:
            notifier = getattr(self, "_SyncObj__pipeNotifier", None)
            if notifier is not None:
                notifier.notify()
        return not self._SyncObj__conf.appendEntriesUseBatch

    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:
        with self._apply_lock:
            super()._SyncObj__loadDumpFile(clearJournal)

    def read_at_applied(self, read: Callable[[], T]) -> tuple[int, T]:
        """Run `read` with no apply in progress; return the applied index it saw and its result."""
        with self._apply_lock:
            return int(self.raftLastApplied), read()

    @property
    def leader_commit_index(self) -> int | None:
        """The commit index the leader last told this node (its own on the leader)."""
        value = self._SyncObj__leaderCommitIndex
        return int(value) if value is not None else None

    def apply_stalled_for(self) -> float:
        """Seconds since applying last progressed while committed entries were waiting."""
        return time.monotonic() - self._progress_at

    def note_applied(self) -> None:
        """Record that a command was just applied (a long replay runs within one tick)."""
        self._progress_at = time.monotonic()

    def _note_progress(self) -> None:
        applied = int(self.raftLastApplied)
        if applied != self._seen_applied or applied >= int(self.raftCommitIndex):
            self._seen_applied = applied
            self._progress_at = time.monotonic()
