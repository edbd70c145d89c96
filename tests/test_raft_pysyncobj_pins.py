"""pysyncobj, used through its internals, is pinned here: its version and the source of
every private part mes/raft relies on. mes.raft.transport and mes.raft.wire replace its
accept, read, parse and unpickle steps, written against pysyncobj 0.3.17's source of those
steps. A new pysyncobj fails here first; re-read the replaced functions, port the checks
(frame limit before buffering, bytearray buffer, decrypt before unpickle, restricted
globals, accept batch) and run tests/test_raft_port_attacks.py and tests/test_raft_wire.py
again."""

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


# Everything else of pysyncobj that mes/raft reaches by a private name (name-mangled
# methods it calls or overrides, and the constructors that set the attributes it reads):
# DurableSyncObj (journal durability, snapshot alignment, replies held until the journal
# is synced), the applied-index and replication views, the journal's file layout.
PINNED_INTERNALS = {
    ("SyncObj", "__init__"): "09df12cd7fd7d727",
    ("SyncObj", "_SyncObj__applyLogEntries"): "073db677773b5a2d",
    ("SyncObj", "_SyncObj__getCurrentLogIndex"): "e5af22ca246686bd",
    ("SyncObj", "_SyncObj__getCurrentLogTerm"): "1cb8867e6a13d397",
    ("SyncObj", "_SyncObj__getEntries"): "e29c4b33293b2101",
    ("SyncObj", "_SyncObj__loadDumpFile"): "ec66e83905de703b",
    ("SyncObj", "_SyncObj__onMessageReceived"): "ddfe34b6c0282179",
    ("SyncObj", "_SyncObj__sendNextNodeIdx"): "68aaeefc267b8896",
    ("SyncObj", "_onTick"): "cc9eb08232d005ba",
    ("SyncObj", "_getLeader"): "90e3b8391a79e851",
    # PreVote: pysyncobj's election condition, timeout, term and state (mes/raft/pre_vote.py)
    ("SyncObj", "_SyncObj__connectedToAnyone"): "acd40e9e3ac6c4cc",
    ("SyncObj", "_SyncObj__generateRaftTimeout"): "92ed37d3620e781a",
    ("SyncObj", "_SyncObj__setCurrentTerm"): "0ad5bf456ac06bd3",
    ("SyncObj", "_SyncObj__setState"): "2c1f239f7bd79b39",
    ("SyncObj", "_getConf"): "e0e1d939285bf312",
    ("SyncObj", "_isLeader"): "56c32c31db26cdc0",
    ("FileJournal", "__init__"): "bdaa496431fffae4",
    ("FileJournal", "_FileJournal__getDefaultHeader"): "d2ded12cff7234c1",
    ("TcpServer", "__init__"): "54fe6123559b4102",
    ("TcpConnection", "__init__"): "49b541d35a74a131",
    ("TCPTransport", "__init__"): "4f0eef9cc5c06f5e",
}


def test_the_private_parts_mes_raft_relies_on_are_unchanged() -> None:
    from pysyncobj import SyncObj
    from pysyncobj.journal import FileJournal
    from pysyncobj.tcp_connection import TcpConnection
    from pysyncobj.tcp_server import TcpServer
    from pysyncobj.transport import TCPTransport

    classes = {cls.__name__: cls for cls in (SyncObj, FileJournal, TcpServer, TcpConnection,
                                             TCPTransport)}
    found = {(owner, name): sha(getattr(classes[owner], name))
             for owner, name in PINNED_INTERNALS}
    changed = sorted(f"{owner}.{name}" for (owner, name), digest in found.items()
                     if PINNED_INTERNALS[owner, name] != digest)
    assert not changed, (
        f"pysyncobj changed {', '.join(changed)}: mes/raft (durable.py, journal.py, "
        "snapshot.py, replication.py, applied.py, pre_vote.py, node.py) reaches into them "
        "by name. Re-read each, then run tests/test_durable_journal.py, "
        "tests/test_power_cut.py, tests/test_raft_pre_vote.py, "
        "tests/test_raft_port_attacks.py and bench/raft_write.py before pinning the new hashes")
