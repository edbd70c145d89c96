"""What a node unpickles from the network: plain data only.

pysyncobj frames every Raft message, log entry and snapshot chunk as a pickle, and a pickle
can name any importable callable (a frame that calls `os.system` runs a shell). The
encrypted transport (CLUSTER_SECRET, or the per-install secret of a single node) refuses
strangers before anything is unpickled; this is the second wall: whatever is unpickled,
from a peer or from a snapshot file, may name only the few classes Raft data holds.
"""

from __future__ import annotations

import io
import logging
import pickle
from typing import Any

import pysyncobj.pickle

log = logging.getLogger(__name__)

# (module, name) of every global that Raft messages, log entries and snapshots hold:
# sets and empty bytes (pickle protocol 2 names them), bytes (protocol 2 encodes them
# through _codecs.encode) and pysyncobj's node addresses (cluster membership).
ALLOWED = frozenset({
    # protocol 2 names builtins by their Python 2 module; the unpickler maps it after this
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "bytes"),  # b"" in protocol 2
    ("__builtin__", "bytearray"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
    ("pysyncobj.node", "Node"),
    ("pysyncobj.node", "TCPNode"),
})


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a callable that Raft data never holds."""


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            log.error("refused to unpickle %s.%s (Raft data never holds it)", module, name)
            raise RefusedGlobal(f"refused global {module}.{name}")
        return super().find_class(module, name)


def loads(data: bytes | str) -> Any:
    """Unpickle Raft data, refusing any global outside ALLOWED."""
    return _PlainData(io.BytesIO(pysyncobj.pickle.to_bytes(data))).load()


def load(file: Any) -> Any:
    """Unpickle Raft data from a file, refusing any global outside ALLOWED."""
    return _PlainData(file).load()


def install() -> None:
    """Make pysyncobj unpickle through `loads` (its messages, entries and transmissions)."""
    pysyncobj.pickle.loads = loads
    pysyncobj.pickle.load = load
