"""mes.raft.transport and mes.raft.wire replace pysyncobj's accept, read, parse and unpickle
steps: they are written against pysyncobj 0.3.17 and its source of those steps. A new
pysyncobj fails here first; re-read the replaced functions, port the checks (frame limit
before buffering, bytearray buffer, decrypt before unpickle, restricted globals, accept
batch) and run tests/test_raft_port_attacks.py and tests/test_raft_wire.py again."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version
from typing import Any

from mes.raft import transport

PINNED_SOURCES = {
    "_TcpConnection__processRead": "002c11f3c6f60907",
    "_TcpConnection__processParseMessage": "4ecbfdad3baa2eac",
    "_TcpServer__onNewConnection": "eb2f93a2f1975c65",
}


def sha(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def test_pysyncobj_is_the_pinned_version() -> None:
    assert version("pysyncobj") == "0.3.17"


def test_the_replaced_steps_are_the_ones_the_replacements_were_written_for() -> None:
    found = {name: sha(function) for (_, name), function in transport.originals().items()}
    assert found == PINNED_SOURCES


def test_the_replacements_are_installed() -> None:
    import pysyncobj.pickle
    from pysyncobj.tcp_connection import TcpConnection
    from pysyncobj.tcp_server import TcpServer

    import mes.raft.node  # noqa: F401  (installs them)
    from mes.raft import wire

    assert TcpConnection._TcpConnection__processRead is transport._process_read
    assert TcpServer._TcpServer__onNewConnection is transport._on_new_connection
    assert pysyncobj.pickle.loads is wire.loads
