"""Full garbage collections on a schedule, where a pause cannot cost the cluster a leader.

A full collection walks every object of the process with every thread stopped: seconds at a
big farm (mes.interpreter). On a follower that is harmless: the leader's heartbeats wait in
the socket and are read when the Raft thread runs again, and pre-vote keeps the paused node
from deposing anyone. On the leader of peers it is not: its followers hear nothing for an
election timeout and elect another. So a node collects every `interval` seconds unless it
leads peers at that moment; a lone node always collects (nobody can replace it). What the
leader skips waits until it follows again; the young generations are still collected
everywhere, as the interpreter does. A leader that has put its collection off for
LEADER_PATIENCE seconds hands leadership to its most caught-up follower (Raft's
TimeoutNow: the cluster keeps a leader throughout) and collects as a follower: cyclic
garbage that outlives the young generations (a few thousand objects per 20 s under load
in bench/big_orders.py) must not grow on a leader for weeks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

LEADER_PATIENCE = 3600.0


class FullCollections:
    """Runs `collect` every `interval` seconds while `may_pause()` says the node may stop."""

    def __init__(self, interval: float, may_pause: Callable[[], bool],
                 collect: Callable[[], int] = gc.collect,
                 hand_off: Callable[[], None] | None = None,
                 patience: float = LEADER_PATIENCE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._may_pause = may_pause
        self._collect = collect
        self._hand_off = hand_off
        self._patience = patience
        self._clock = clock
        self._put_off_since: float | None = None
        self.collections = 0
        self.skipped = 0
        self.hand_offs = 0
        self.last_pause: float | None = None

    def step(self) -> bool:
        """One scheduled turn: collect unless the node leads peers; whether it collected."""
        if not self._may_pause():
            self.skipped += 1
            now = self._clock()
            if self._put_off_since is None:
                self._put_off_since = now
            waited = now - self._put_off_since
            if self._hand_off is not None and waited >= self._patience:
                log.info("full garbage collection put off for %.0f s while leading: handing "
                         "leadership to a follower", waited)
                self.hand_offs += 1
                self._hand_off()  # asked again each turn until another node leads
            elif self.skipped == 1 or self.skipped % 12 == 0:
                log.info("full garbage collection put off: this node leads its peers "
                         "(%d turns so far)", self.skipped)
            return False
        self._put_off_since = None
        started = time.perf_counter()
        found = self._collect()
        self.last_pause = time.perf_counter() - started
        self.collections += 1
        self.skipped = 0
        log.info("full garbage collection: %d unreachable objects, %.2f s", found,
                 self.last_pause)
        return True

    def status(self) -> dict[str, Any]:
        """Collections done, turns put off in a row, hand-offs asked, the last pause (s)."""
        return {"done": self.collections, "put_off": self.skipped,
                "hand_offs": self.hand_offs,
                "last_seconds": None if self.last_pause is None else round(self.last_pause, 3)}

    async def run(self) -> None:
        """Forever: one turn every `interval` seconds (a schedule, not a wait for a state)."""
        while True:
            await asyncio.sleep(self.interval)
            self.step()
