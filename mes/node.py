"""One farm node: its state machine, its Raft engine and its command writer."""

from __future__ import annotations

import logging
from typing import Any

from mes.config import Settings
from mes.raft.cluster import cluster_view
from mes.raft.node import RaftNode, RaftTuning, build_conf
from mes.raft.snapshot import SnapshotFiles
from mes.raft.writer import Writer
from mes.state.machine import StateMachine

log = logging.getLogger(__name__)


class FarmNode:
    """Owns the pieces of a node and their lifetime."""

    def __init__(self, settings: Settings, tuning: RaftTuning | None = None) -> None:
        self.settings = settings
        self.machine = StateMachine(settings.database_url)
        conf = build_conf(settings.data_dir, SnapshotFiles(self.machine),
                          settings.raft_snapshot_entries, settings.raft_snapshot_interval,
                          tuning or RaftTuning())
        self.raft = RaftNode(settings.raft_self, settings.peers, self.machine, conf)
        self.writer = Writer(self.raft, settings.raft_write_timeout)
        log.info("raft node %s started with peers %s", settings.raft_self, settings.peers or "none")

    def cluster(self) -> dict[str, Any]:
        """This node's view of the cluster."""
        return cluster_view(self.raft.getStatus(), self.machine.applied_count)

    def close(self) -> None:
        """Stop Raft and release the database."""
        self.raft.destroy_synchronous()
        self.machine.close()
