"""Read barriers: wait until this node has applied an index, or commit a no-op first.

`AppliedWaiter.wait(index)` is read-your-writes across nodes: a write's answer names the
Raft index it was applied at, and a read on any node that names it waits until that node
has applied it. `Linearizer.barrier()` is a linearizable read: it commits a no-op through
Raft (pysyncobj has no read index or lease), so the read that follows on this node sees
every write acknowledged before the read began. Concurrent readers share one no-op: a
reader joins the next no-op to start, never one already under way (which may have been
committed before the reader's own start).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mes.state.machine import Outcome

# How often a waiter looks at the applied index even without an apply notice (a snapshot
# installed from the leader advances it without applying commands one by one).
POLL = 0.05


class AppliedWaiter:
    """Wakes coroutines waiting for this node's applied index to reach a value."""

    def __init__(self, last_applied: Callable[[], int]) -> None:
        self._last_applied = last_applied
        self._latest = 0  # the highest index an apply notice named
        self._waiting = 0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def applied(self) -> int:
        """The highest index this node has applied (its state includes it)."""
        return max(self._last_applied(), self._latest)

    def on_apply(self, _: Mapping[str, Any], outcome: Outcome) -> None:
        """State machine listener (Raft thread): note the index and wake any waiter."""
        if outcome.index > self._latest:
            self._latest = outcome.index
        loop = self._loop
        if self._waiting and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._pulse)

    def _pulse(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self, index: int, timeout: float) -> bool:
        """Whether this node applied `index` within `timeout` seconds."""
        if self.applied() >= index:
            return True
        loop = asyncio.get_running_loop()
        self._loop = loop
        deadline = loop.time() + timeout
        self._waiting += 1
        try:
            while self.applied() < index:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                if self._event is None:
                    self._event = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, POLL)):
                        await self._event.wait()
            return True
        finally:
            self._waiting -= 1


class Linearizer:
    """Commits shared no-ops: `barrier()` returns an index committed after it was called."""

    def __init__(self, commit_noop: Callable[[], Awaitable[int]]) -> None:
        self._commit_noop = commit_noop
        self._next: asyncio.Future[int] | None = None
        self._driver: asyncio.Task[None] | None = None
        self.noops = 0

    async def barrier(self) -> int:
        """The index of a no-op committed (and applied here) after this call began.

        Raises what committing raised (NoLeader when no leader commits in time).
        """
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
        future = self._next
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name="linearizer")
        return await asyncio.shield(future)

    async def _drive(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            try:
                self.noops += 1
                index = await self._commit_noop()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(index)


def _retrieve(future: asyncio.Future[int]) -> None:
    """Mark a failure seen even when every reader that wanted it has gone."""
    if not future.cancelled():
        future.exception()
