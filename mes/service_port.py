"""What a node's background services (printer workers, deliveries, the blob sweeper, the
admin's bootstrap, metrics) need of the node that runs them, so that they never import it.

`mes.node.FarmNode` is one; each service narrows or extends this to what it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

from mes.config import Settings
from mes.state.machine import Outcome

T = TypeVar("T")


class ServicePort(Protocol):
    """A node as a background service sees it."""

    settings: Settings

    def read_now(self, query: Callable[[Connection], T]) -> T:
        """Read the applied state here and now (a short read, on the calling thread)."""

    async def read(self, query: Callable[[Connection], T]) -> T:
        """Read the applied state off the event loop."""

    async def submit(self, op: str, args: Mapping[str, Any], remember: bool = True) -> Outcome:
        """Commit a command of the farm itself through Raft (raises
        `mes.raft.writer.NoLeader` when no leader commits it in time)."""

    def is_leader(self) -> bool:
        """Whether this node is the Raft leader now."""

    def on_apply(self, listener: Callable[[Mapping[str, Any], Outcome], None]) -> None:
        """Call `listener(command, outcome)` after each command applied here (on the Raft
        thread: it must be quick and must not block)."""
