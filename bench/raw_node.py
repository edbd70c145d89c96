"""A plain pysyncobj node with the same Raft configuration as mes: the baseline of raft_write.

Run as a follower process: `python bench/raw_node.py SELF PEER1 PEER2`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mes.raft.node import RaftTuning, build_conf


def raw_conf(data_dir: Path, tuning: RaftTuning) -> SyncObjConf:
    """Exactly mes's pysyncobj settings (mes.raft.node.build_conf), without our snapshot files."""
    return build_conf(data_dir, None, 5000, 300.0, tuning)


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
    self_address, *peers = sys.argv[1:]
    # Followers get long election timeouts so that the benchmark's own node leads.
    tuning = RaftTuning(election_min=3.0, election_max=4.0)
    with tempfile.TemporaryDirectory() as tmp:
        RawStore(self_address, peers, raw_conf(Path(tmp), tuning))
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
