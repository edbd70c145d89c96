"""A plain pysyncobj node with the same Raft configuration as mes: the baseline of raft_write.

Run as a follower process: `python bench/raw_node.py [--password P] SELF PEER1 PEER2`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mes.raft.node import RaftTuning, build_conf


def raw_conf(data_dir: Path, tuning: RaftTuning, password: str | None = None) -> SyncObjConf:
    """Exactly mes's pysyncobj settings (mes.raft.node.build_conf), without our snapshot files;
    with `password` the transport is encrypted as a node's with CLUSTER_SECRET."""
    return build_conf(data_dir, None, 5000, 300.0, tuning, password=password)


class RawStore(SyncObj):  # type: ignore[misc]
    """A replicated dict write, the cheapest meaningful command."""

    def __init__(self, self_address: str, peers: list[str], conf: SyncObjConf) -> None:
        self.data: dict[str, Any] = {}
        super().__init__(self_address, peers, conf)

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: str, value: Any) -> int:
        self.data[key] = value
        return len(self.data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--password")
    parser.add_argument("self_address")
    parser.add_argument("peers", nargs="+")
    args = parser.parse_args()
    # Followers get long election timeouts so that the benchmark's own node leads.
    tuning = RaftTuning(election_min=3.0, election_max=4.0)
    with tempfile.TemporaryDirectory() as tmp:
        RawStore(args.self_address, args.peers, raw_conf(Path(tmp), tuning, args.password))
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
