"""Adding and removing nodes while the cluster runs (pysyncobj's dynamic membership).

One change at a time: pysyncobj refuses a change while the previous one is not yet applied
(and before the leader's first no-op is). A change is a Raft log entry like any command, so
it is committed by a majority of the nodes of the configuration it is appended to.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal, Protocol

from pysyncobj import FAIL_REASON

# host:port, the host a DNS name or an IPv4 address.
ADDRESS = re.compile(r"^(?=.{1,261}$)[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,253}[A-Za-z0-9])?"
                     r":(?:[1-9][0-9]{0,4})$")


class MembershipRefused(Exception):
    """The leader refused the change: the node is already in (or not in) the cluster, or
    another change is still in progress."""


class MembershipTimeout(Exception):
    """No leader committed the change in time; it may still be committed later."""


class DynamicRaft(Protocol):
    """What membership changes need of the Raft node (pysyncobj's API)."""

    def addNodeToCluster(self, node: str, callback: Any = None) -> None: ...

    def removeNodeFromCluster(self, node: str, callback: Any = None) -> None: ...


def valid_address(address: str) -> bool:
    """Whether `address` is a Raft address (host:port, port 1-65535)."""
    return bool(ADDRESS.match(address)) and int(address.rsplit(":", 1)[1]) <= 65535


async def change(raft: DynamicRaft, action: Literal["add", "remove"], address: str,
                 timeout: float) -> None:
    """Commit adding or removing `address`; raise MembershipRefused or MembershipTimeout."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    def done(_result: Any, error: int) -> None:
        loop.call_soon_threadsafe(_settle, future, error)

    call = raft.addNodeToCluster if action == "add" else raft.removeNodeFromCluster
    call(address, callback=done)
    try:
        async with asyncio.timeout(timeout):
            error = await future
    except TimeoutError:
        if future.done() and not future.cancelled():  # settled just as the time ran out
            error = future.result()
        else:
            raise MembershipTimeout(f"no leader committed the change within {timeout:g} s; "
                                    "it may still be committed: check GET /cluster") from None
    if error == FAIL_REASON.REQUEST_DENIED:
        raise MembershipRefused("the leader refused the change: the node is already a "
                                "member (or not one), or another change is in progress")
    if error != FAIL_REASON.SUCCESS:
        raise MembershipTimeout(f"the change was not committed (pysyncobj reason {error}); "
                                "it may still be committed: check GET /cluster")


def _settle(future: asyncio.Future[int], error: int) -> None:
    if not future.done():
        future.set_result(error)
