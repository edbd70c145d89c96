"""The Raft index a request (or an OPC UA method call) wrote or read at.

An interface opens `noting_index()` around the work of one request; the command door
(writes) and the read consistency levels (reads) `note_index` what they reached, and the
interface reports the highest (REST: the `X-Raft-Index` header).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class IndexHolder:
    """The highest index noted inside one `noting_index()` block."""

    __slots__ = ("index", "not_ready")

    def __init__(self) -> None:
        self.index = 0
        # Why the node that read was not ready (behind, no leader), if it was not.
        self.not_ready: str | None = None


_current: ContextVar[IndexHolder | None] = ContextVar("raft_index", default=None)


def note_index(index: int) -> None:
    """Report `index` for the current request (the highest noted wins)."""
    holder = _current.get()
    if holder is not None and index > holder.index:
        holder.index = index


def note_not_ready(reasons: str) -> None:
    """Report that the current request read from a node that is not ready, and why."""
    holder = _current.get()
    if holder is not None:
        holder.not_ready = reasons


@contextmanager
def noting_index() -> Iterator[IndexHolder]:
    """Collect the indexes noted inside the block (a request, or an OPC UA method call)."""
    holder = IndexHolder()
    token = _current.set(holder)
    try:
        yield holder
    finally:
        _current.reset(token)
