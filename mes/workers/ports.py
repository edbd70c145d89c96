"""What the workers need of the node that runs them, so that they never import it."""

from __future__ import annotations

from typing import Protocol

from mes.service_port import ServicePort


class FarmPort(ServicePort, Protocol):
    """A node as the workers see it (mes.node.FarmNode is one)."""

    @property
    def self_address(self) -> str:
        """This node's Raft address: the name assignments and leases use for it."""

    @property
    def cluster_size(self) -> int:
        """How many nodes the cluster has, this one included."""

    @property
    def farm_version(self) -> int:
        """A number that changes whenever a command other than telemetry or a lease renewal is
        applied here, and after a snapshot."""

    async def blob(self, sha: str) -> bytes | None:
        """A stored G-code file, fetched from a peer if this node lacks it."""

    async def on_leading(self) -> None:
        """What the node does first when it becomes leader (before the workers' epoch)."""

