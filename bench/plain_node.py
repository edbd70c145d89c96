"""A mes node whose Raft transport is not encrypted: bench/raft_write.py's baseline only.

A cluster of mes nodes cannot run without CLUSTER_SECRET; to measure what encryption costs,
this wrapper starts the ordinary `server` with pysyncobj's password removed after
mes.raft.node.build_conf made it. Never run a real cluster like this.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pysyncobj import SyncObjConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mes.raft import node as raft_node

_build_conf = raft_node.build_conf


def _unencrypted(*args: Any, **kwargs: Any) -> SyncObjConf:
    conf = _build_conf(*args, **kwargs)
    conf.password = None
    return conf


if __name__ == "__main__":
    raft_node.build_conf = _unencrypted  # before mes.node imports it
    from mes.cli import server

    server()
