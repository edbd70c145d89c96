"""A process that is not a node: raw pysyncobj objects aimed at a cluster's Raft ports.

    python -m tests.raft_stranger SPEC_JSON

SPEC_JSON is a list of strangers, each {"name", "self" (a Raft address, or null for a
read-only node), "bind" (where it listens, or null), "partners", "password" (or null)}.
Prints `ready` once every stranger listens, then answers each line on stdin with one JSON
line: every stranger's report (`status`), or the report and exit (`stop`).

Every stranger starts at term STRANGER_TERM, far above any term a test cluster reaches by its
own elections: a node that ever took a stranger's message in would show such a term, and a
term the cluster moved to by itself (a late heartbeat on a loaded machine) never does.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pysyncobj.syncobj
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.journal import MemoryJournal
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

STRANGER_TERM = 1_000_000


def _journal_at_a_high_term(journal_file: Any = None) -> MemoryJournal:
    """pysyncobj's in-memory journal (strangers keep nothing), at term STRANGER_TERM."""
    journal = MemoryJournal()
    journal.setCurrentTerm(STRANGER_TERM, None)
    return journal


class CountingTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport, counting connections made and lost and messages received."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.counts = {"connected": 0, "dropped": 0, "received": 0}
        super().__init__(*args, **kwargs)

    def _onOutgoingConnected(self, conn: TcpConnection) -> None:
        self.counts["connected"] += 1
        super()._onOutgoingConnected(conn)

    def _onDisconnected(self, conn: TcpConnection) -> None:
        self.counts["dropped"] += 1
        super()._onDisconnected(conn)

    def _onOutgoingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        self.counts["received"] += 1
        super()._onOutgoingMessageReceived(conn, message)

    def _onIncomingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        self.counts["received"] += 1
        super()._onIncomingMessageReceived(conn, message)

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        self.counts["received"] += 1
        super()._onMessageReceived(node, message)


class Stranger(SyncObj):  # type: ignore[misc]
    """A would-be node with mes's replicated method name, recording what it applies."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.applied: list[Any] = []
        self.transports: list[CountingTransport] = []

        def transport(*args: Any, **kwargs: Any) -> CountingTransport:
            made = CountingTransport(*args, **kwargs)
            self.transports.append(made)
            return made

        conf = SyncObjConf(password=spec["password"], bindAddress=spec["bind"],
                           connectionRetryTime=0.1, raftMinTimeout=0.1, raftMaxTimeout=0.2,
                           appendEntriesPeriod=0.02, autoTick=True, dynamicMembershipChange=False)
        super().__init__(spec["self"], spec["partners"], conf, transportClass=transport)

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, command: Any) -> None:
        self.applied.append(command)

    def report(self) -> dict[str, Any]:
        status = self.getStatus()
        return {"term": status["raft_term"], "log_len": status["log_len"],
                "commit_idx": status["commit_idx"], "last_applied": status["last_applied"],
                "leader": None if status["leader"] is None else str(status["leader"]),
                "applied": len(self.applied), **self.transports[0].counts}


def main() -> None:
    pysyncobj.syncobj.createJournal = _journal_at_a_high_term  # type: ignore[attr-defined]
    specs = json.loads(sys.argv[1])
    strangers = {spec["name"]: Stranger(spec) for spec in specs}
    for spec in specs:
        if spec["self"] is not None:  # a read-only node listens nowhere
            strangers[spec["name"]].waitBinded()
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            print(json.dumps({name: s.report() for name, s in strangers.items()}), flush=True)
            if line.strip() == "stop":
                break
    finally:
        for stranger in strangers.values():
            stranger.destroy()


if __name__ == "__main__":
    main()
