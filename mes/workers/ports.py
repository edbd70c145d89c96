"""What the workers need of the node that runs them, so that they never import it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

from mes.config import Settings
from mes.state.machine import Outcome

T = TypeVar("T")


class FarmPort(Protocol):
    """A node as the workers see it (mes.node.FarmNode is one)."""

    settings: Settings

    @property
    def self_address(self) -> str:
        """This node's Raft address: the name assignments and leases use for it."""

    @property
    def farm_version(self) -> int:
        """A number that changes whenever a command other than telemetry or a lease renewal is
        applied here, and after a snapshot."""

    def read_now(self, query: Callable[[Connection], T]) -> T:
        """Read the applied state here and now (a short read, on the calling thread)."""

    async def read(self, query: Callable[[Connection], T]) -> T:
        """Read the applied state off the event loop."""

    async def submit(self, op: str, args: Mapping[str, Any], remember: bool = True) -> Outcome:
        """Commit a command through Raft (raises when no leader commits it in time)."""

    def is_leader(self) -> bool:
        """Whether this node is the Raft leader now."""

    async def blob(self, sha: str) -> bytes | None:
        """A stored G-code file, fetched from a peer if this node lacks it."""

    async def on_leading(self) -> None:
        """What the node does first when it becomes leader (before the workers' epoch)."""

    def on_apply(self, listener: Callable[[Mapping[str, Any], Outcome], None]) -> None:
        """Call `listener(command, outcome)` after each command applied here (on the Raft
        thread: it must be quick and must not block)."""
