"""The printer workers' counters: ticks, tick lag and failed polls."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """Shared by every printer worker of a node (no per-printer labels: 1,000 printers
    would make 1,000 series of each). With `registry` None they count but are not exported."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.ticks = Counter("mes_worker_ticks", "Printer worker ticks on this node",
                             registry=registry)
        self.tick_lag = Histogram(
            "mes_worker_tick_lag_seconds", "How late each printer worker tick started",
            buckets=LAG_BUCKETS, registry=registry)
        self.polls_failed = Counter(
            "mes_worker_polls_failed",
            "Printer polls that failed (no answer, timeout, unreadable answer)",
            registry=registry)
