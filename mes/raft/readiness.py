"""Whether a node is ready to serve: a leader is known, it has caught up and it can apply."""

from __future__ import annotations

from dataclasses import dataclass

from mes.raft.applied import AppliedView

NO_LEADER = "no leader is known"
# A node further than this many entries behind the leader's commit index is catching up.
MAX_LAG = 100
# Committed entries waiting this long without any being applied mean the node cannot apply.
STALL_SECONDS = 5.0
# A node this far behind refuses writes at once (503) instead of holding them until it has
# applied them (about 0.3 ms an entry): a restarted node replaying its log, not a leader in
# the middle of applying a burst.
WRITE_MAX_LAG = 1000


@dataclass(frozen=True)
class RaftProgress:
    """The few numbers readiness depends on, all read from the Raft engine without a query."""

    leader: str | None
    applied_index: int
    commit_index: int
    leader_commit_index: int | None
    stalled_for: float


def progress_of(raft: AppliedView) -> RaftProgress:
    """Read this node's progress from its Raft engine (no database query)."""
    leader = raft._getLeader()
    return RaftProgress(leader=str(leader) if leader is not None else None,
                        applied_index=int(raft.raftLastApplied),
                        commit_index=int(raft.raftCommitIndex),
                        leader_commit_index=raft.leader_commit_index,
                        stalled_for=raft.apply_stalled_for())


def not_ready_reasons(progress: RaftProgress, max_lag: int | None = None,
                      stall_seconds: float | None = None) -> list[str]:
    """Why this node is not ready, as sentences; empty when it is ready."""
    max_lag = MAX_LAG if max_lag is None else max_lag
    stall_seconds = STALL_SECONDS if stall_seconds is None else stall_seconds
    reasons = []
    if progress.leader is None:
        reasons.append(NO_LEADER)
    target = max(progress.commit_index, progress.leader_commit_index or 0)
    lag = target - progress.applied_index
    if lag > max_lag:
        reasons.append(f"catching up: applied index {progress.applied_index} is {lag} entries "
                       f"behind commit index {target}")
    if progress.applied_index < progress.commit_index and progress.stalled_for > stall_seconds:
        reasons.append(f"cannot apply: applied index stuck at {progress.applied_index} for "
                       f"{progress.stalled_for:.0f} s below commit index {progress.commit_index}")
    return reasons


def write_refusal(progress: RaftProgress) -> str | None:
    """Why this node refuses writes at once (None: it takes them). Knowing no leader is no
    reason here: a write waits a moment for an election (mes.raft.writer.NO_LEADER_WAIT)."""
    reasons = not_ready_reasons(progress, max_lag=WRITE_MAX_LAG)
    reasons = [r for r in reasons if r != NO_LEADER]
    return "; ".join(reasons) or None
