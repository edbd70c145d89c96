"""This node's lease: renewed through Raft; while it is fresh the node may drive printers.

A renewal counts from the moment it was sent, so the node stops acting (`valid()` turns
false) at `sent + NODE_LEASE_SECONDS - margin` by its own monotonic clock, strictly before
the leader, which counts from when it saw the renewal applied, may give its printers to
another node. A node alone in its cluster has nobody to give its printers to: once it held
its lease, the lease does not lapse while it stays alone, however busy it is (a lapse only
stopped its workers and lost their running prints).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mes.state.ops import Op
from mes.workers.ports import FarmPort

log = logging.getLogger(__name__)


def lease_margin(lease_seconds: float) -> float:
    """How long before its lease ends a node stops acting: a fifth of the lease, at least
    half a second (room for clock rates and for stopping the workers)."""
    return max(0.5, lease_seconds / 5)


class LeaseKeeper:
    """Renews this node's lease every NODE_LEASE_RENEW seconds."""

    def __init__(self, port: FarmPort) -> None:
        self.port = port
        self.lease_seconds = port.settings.printers.lease_seconds
        self.renew_every = port.settings.printers.lease_renew
        self.valid_until = 0.0  # monotonic
        self.renewals = 0
        self.failures = 0

    def valid(self) -> bool:
        """Whether this node may act on its printers now."""
        return time.monotonic() < self.valid_until or self.alone()

    def alone(self) -> bool:
        """Whether this node held its lease and is the only node of its cluster."""
        return self.renewals > 0 and self.port.cluster_size == 1

    def remaining(self) -> float:
        """Seconds this node may still act without another renewal (negative: lapsed)."""
        return self.valid_until - time.monotonic()

    def describe(self) -> str:
        """The lease in words: time left, lapsed how long ago, or never held."""
        if self.renewals == 0:
            return "not held yet"
        left = self.remaining()
        if self.alone():
            return "held (the only node)"
        return f"{left:.1f} s left" if left > 0 else f"lapsed {-left:.1f} s ago"

    async def renew(self) -> bool:
        """One renewal; True when it committed."""
        sent = time.monotonic()
        budget = self.lease_seconds - lease_margin(self.lease_seconds)
        try:
            async with asyncio.timeout(budget):
                outcome = await self.port.submit(Op.NODE_LEASE,
                                                 {"node": self.port.self_address},
                                                 remember=False)
        except Exception as exc:  # no leader, timeout: the lease simply runs down
            self.failures += 1
            log.info("lease renewal failed (%s); %s", type(exc).__name__, self.describe())
            return False
        if outcome.error is not None:
            self.failures += 1
            log.error("lease renewal refused: %s", outcome.error["message"])
            return False
        self.valid_until = max(self.valid_until, sent + budget)
        self.renewals += 1
        return True

    async def run(self) -> None:
        """Renew until cancelled."""
        while True:
            started = time.monotonic()
            await self.renew()
            await asyncio.sleep(max(0.0, self.renew_every - (time.monotonic() - started)))
