"""Snapshot files: the SQLite image of the state machine plus pysyncobj's own data."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
from typing import Any

from mes.state.machine import StateMachine

FORMAT = "mes-snapshot-1"
EXIT_BAD_SNAPSHOT = 70
log = logging.getLogger(__name__)


class SnapshotFiles:
    """pysyncobj's custom serializer pair, bound to one state machine."""

    def __init__(self, machine: StateMachine) -> None:
        self._machine = machine

    def serialize(self, file_name: str, raft_data: Any) -> None:
        """Write the database and pysyncobj's data; runs on the Raft thread between applies."""
        payload = {"format": FORMAT, "db": self._machine.snapshot(), "raft": raft_data}
        with gzip.open(file_name, "wb", compresslevel=1) as out:
            pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)

    def deserialize(self, file_name: str) -> Any:
        """Load the database from a snapshot file and hand pysyncobj its data back.

        pysyncobj swallows a failure here and would replay the compacted journal onto an
        empty database, silently diverging from the other nodes: stop the process instead.
        """
        try:
            with gzip.open(file_name, "rb") as src:
                payload = pickle.load(src)
            if not isinstance(payload, dict) or payload.get("format") != FORMAT:
                raise ValueError(f"{file_name} is not a mes snapshot")
            self._machine.restore(payload["db"])
            return payload["raft"]
        except Exception:
            log.critical("cannot load the snapshot %s; stopping rather than diverging",
                         file_name, exc_info=True)
            os._exit(EXIT_BAD_SNAPSHOT)
