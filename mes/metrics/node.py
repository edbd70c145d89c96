"""A node's metrics: its own registry, the counters others increment, and the scrape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from mes.metrics.farm import FarmCollector, ScrapedNode
from mes.metrics.runtime import RuntimeMetrics
from mes.metrics.workers import WorkerMetrics
from mes.state.commands import declared
from mes.state.machine import Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_CODE_LENGTH = 64


class NodeMetrics:
    """Everything /metrics shows for one node, in a registry of its own (not the global
    default one: tests run several nodes in one process)."""

    def __init__(self, node: ScrapedNode) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.commands_applied = Counter(
            "mes_commands_applied", "Commands applied by this node's state machine (every "
            "node applies every committed command)", ["op"], registry=registry)
        self.commands_rejected = Counter(
            "mes_commands_rejected", "Commands the state machine rejected, by error code",
            ["op", "code"], registry=registry)
        self.http_requests = Counter(
            "mes_http_requests", "HTTP requests answered, by route template and status",
            ["method", "route", "status"], registry=registry)
        self.http_duration = Histogram(
            "mes_http_request_duration_seconds", "Time to answer an HTTP request",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.workers = WorkerMetrics(registry)
        self.runtime = RuntimeMetrics(registry)
        registry.register(FarmCollector(node))
        ProcessCollector(registry=registry)

    def on_apply(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        """A state machine listener: count the command (runs on the Raft thread)."""
        op = command.get("op") if isinstance(command, Mapping) else None
        label = op if declared(op) is not None else "unknown"
        if outcome.error is None:
            self.commands_applied.labels(label).inc()
            return
        code = outcome.error.get("code")
        code = code[:MAX_CODE_LENGTH] if isinstance(code, str) else "unknown"
        self.commands_rejected.labels(label, code).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this node (reads the database: call it off the
        event loop)."""
        return generate_latest(self.registry)
