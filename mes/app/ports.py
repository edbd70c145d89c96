"""What the interfaces (REST, the page, OPC UA) may ask of a farm node.

`mes.node.FarmNode` provides these; the interfaces import this module, never the node, so
a node can be composed from other parts (a test's fake, another transport) and the
interfaces cannot reach into its engine. Each part is small: reads, the command door, the
cluster view, the change feed, files, the printers' live status and the sign-in services.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Connection

from mes.app.commands import CommandDoor
from mes.auth.authenticator import Authenticator
from mes.auth.throttle import SignInGuard
from mes.config import Settings
from mes.events.hub import EventHub
from mes.files.peers import BlobPeers
from mes.files.store import BlobStore
from mes.metrics.node import NodeMetrics
from mes.raft.readiness import RaftProgress
from mes.state.machine import Outcome

T = TypeVar("T")


class Reads(Protocol):
    """Named reads of the applied state (`mes.state.queries` and friends)."""

    async def read(self, query: Callable[[Connection], T]) -> T:
        """Run `query` on this node's applied state, off the event loop."""

    def read_now(self, query: Callable[[Connection], T]) -> T:
        """Run a short `query` on the calling thread."""


class ReadLevels(Protocol):
    """How fresh a read is: the applied index, waiting for one, a linearizable barrier."""

    def applied_index(self) -> int:
        """The Raft index this node has applied."""

    async def wait_applied(self, index: int, timeout: float) -> bool:
        """Whether this node applied `index` within `timeout` seconds."""

    async def barrier(self) -> int:
        """Commit a no-op through the leader; its index (reads after it are linearizable)."""


class ClusterView(Protocol):
    """The cluster as this node sees it."""

    def cluster(self) -> dict[str, Any]:
        """Nodes, roles, leader, versions and announced URLs."""

    @property
    def cluster_size(self) -> int:
        """How many nodes the cluster has."""

    def peer_urls(self) -> list[str]:
        """The REST URLs the other nodes announced."""

    def is_leader(self) -> bool:
        """Whether this node leads now."""

    def state_image(self) -> tuple[int, bytes]:
        """The applied state as a database image and the index it was taken at."""

    def read_at_applied(self, query: Callable[[Connection], T]) -> tuple[int, T]:
        """`query` on the applied state, with the index it reflects (blocks)."""

    def members(self) -> list[str]:
        """The members' Raft addresses."""

    def progress(self) -> RaftProgress:
        """This node's Raft progress (readiness reads only this)."""

    def raft_alive(self) -> bool:
        """Whether this node's Raft thread runs."""

    def listener_problems(self) -> list[str]:
        """Why a listener this node should have (OPC UA) does not serve; empty when all do."""

    def role(self) -> str:
        """This node's Raft role now: leader, follower, candidate (or unknown)."""

    def raft_status(self) -> dict[str, Any]:
        """The Raft engine's own status of this node (leader, quorum, partners), which
        OPC UA's ServiceLevel is computed from."""

    async def change_membership(self, action: Literal["add", "remove"], address: str) -> None:
        """Add or remove a member (DomainError `rule` or `unavailable`)."""


class ChangeFeed(Protocol):
    """Every applied command, as events and as listeners."""

    events: EventHub

    def on_apply(self, listener: Callable[[Mapping[str, Any], Outcome], None]) -> None:
        """Call `listener` after every applied command (on the Raft thread)."""

    def on_restore(self, listener: Callable[[], None]) -> None:
        """Call `listener` after a snapshot replaced the state (on the Raft thread)."""


class Files(Protocol):
    """G-code files: stored here, fetched from peers, replicated to them."""

    blobs: BlobStore
    peers: BlobPeers

    async def hold_blob(self, sha: str) -> bool:
        """Whether this node holds the file, after fetching it from a peer if it lacked it."""

    async def blob(self, sha: str) -> bytes | None:
        """A stored file's content, fetched from a peer if this node lacks it."""


class PrinterStatus(Protocol):
    """What this node's printer workers see live."""

    def printer_seen_at(self, printer_id: str) -> float | None:
        """When this node's worker last heard from the printer (None: it does not drive it)."""

    def workers_view(self) -> dict[str, Any]:
        """This node's workers, its lease and (leading) the balancer."""


class Farm(Reads, ReadLevels, ClusterView, ChangeFeed, Files, PrinterStatus, Protocol):
    """Everything an interface may use of a node: the parts above, the command door, the
    settings, sign-in and metrics."""

    settings: Settings
    commands: CommandDoor
    auth: Authenticator
    sign_in: SignInGuard
    metrics: NodeMetrics

    async def start_background(self) -> None:
        """Start the node's background work (the serving interface's lifespan begins)."""

    async def stop_background(self) -> None:
        """Stop it (the serving interface's lifespan ends)."""
