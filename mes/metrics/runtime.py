"""What the Python runtime costs the node: garbage-collector pauses and event-loop lag.

Both stall every printer worker at once (they share one event loop), so they are what a
tick lag that is high for all printers together points at."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# How often the loop-lag probe wakes; its lateness is the loop's lag.
PROBE_SECONDS = 0.1


class _GcTimer:
    """One gc callback per process, noting every collection's pause in a bounded queue; each
    node's probe moves them into its histogram (observing a metric inside a collection could
    meet the metric's own lock held by the interrupted code)."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self.pauses: weakref.WeakSet[RuntimeMetrics] = weakref.WeakSet()
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = time.perf_counter()
            return
        began = self._started.pop(thread, None)
        if began is not None:
            pause = (str(info.get("generation", "?")), time.perf_counter() - began)
            for target in list(self.pauses):
                target.gc_pauses.append(pause)  # deque.append: atomic, takes no lock


_timer: _GcTimer | None = None
_timer_lock = threading.Lock()


class RuntimeMetrics:
    """The GC pause and loop lag histograms of one node's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        global _timer
        self.gc_pause = Histogram(
            "mes_gc_pause_seconds", "Garbage collections of this process, by generation",
            ["generation"], buckets=PAUSE_BUCKETS, registry=registry)
        self.loop_lag = Histogram(
            "mes_event_loop_lag_seconds",
            f"How late a probe scheduled every {PROBE_SECONDS} s on the event loop woke",
            buckets=PAUSE_BUCKETS, registry=registry)
        # Collections not yet observed (the gc callback appends, the probe drains).
        self.gc_pauses: deque[tuple[str, float]] = deque(maxlen=10_000)
        with _timer_lock:
            if _timer is None:
                _timer = _GcTimer()
            _timer.pauses.add(self)

    async def probe_loop(self) -> None:
        """Until cancelled: sleep PROBE_SECONDS and record how late the wake-up came."""
        while True:
            due = time.monotonic() + PROBE_SECONDS
            await asyncio.sleep(PROBE_SECONDS)
            self.loop_lag.observe(max(0.0, time.monotonic() - due))
            self.drain_gc_pauses()

    def drain_gc_pauses(self) -> None:
        """Observe the collections noted since the last call."""
        while self.gc_pauses:
            generation, pause = self.gc_pauses.popleft()
            self.gc_pause.labels(generation).observe(pause)
