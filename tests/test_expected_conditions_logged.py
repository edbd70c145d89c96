"""Expected conditions are one INFO line with true numbers: a lease never held says so
(not "-1978.2 s left"), and a worker that finds no leader during a failover retries without
an ERROR and a traceback."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from mes.raft.writer import NoLeader
from mes.state.machine import Outcome
from mes.workers.lease import LeaseKeeper
from mes.workers.printer_worker import PrinterWorker


class NoLeaderPort:
    """A node whose every commit finds no leader."""

    self_address = "127.0.0.1:7000"
    cluster_size = 3
    settings = SimpleNamespace(printers=SimpleNamespace(lease_seconds=10.0, lease_renew=2.0))

    async def submit(self, op: str, args: Mapping[str, Any], remember: bool = True) -> Outcome:
        raise NoLeader("no leader committed it within 5 s")


async def test_a_lease_never_held_is_not_negative_seconds_left(
        caplog: pytest.LogCaptureFixture) -> None:
    lease = LeaseKeeper(NoLeaderPort())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="mes.workers.lease"):
        assert await lease.renew() is False
    assert [r.getMessage() for r in caplog.records] == [
        "lease renewal failed (NoLeader); not held yet"]
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_a_lease_held_says_what_is_left_and_then_how_long_ago_it_lapsed() -> None:
    lease = LeaseKeeper(NoLeaderPort())  # type: ignore[arg-type]
    lease.renewals = 1
    lease.valid_until = time.monotonic() + 5.0
    assert lease.describe().endswith(" s left") and float(lease.describe().split()[0]) > 4
    lease.valid_until = time.monotonic() - 3.0
    assert lease.describe().startswith("lapsed ") and lease.describe().endswith(" s ago")
    assert 2.9 <= float(lease.describe().split()[1]) < 60


class FailoverWorker(PrinterWorker):
    """A worker whose ticks find no leader twice, then one more kind of failure."""

    def __init__(self) -> None:
        settings = SimpleNamespace(printers=SimpleNamespace(worker_interval=0.01))
        counter = SimpleNamespace(observe=lambda _: None, inc=lambda: None)
        ctx = SimpleNamespace(node=SimpleNamespace(settings=settings), fenced=False,
                              metrics=SimpleNamespace(tick_lag=counter, ticks=counter))
        super().__init__("p1", None, ctx, 1)  # type: ignore[arg-type]
        self.failures_left = [NoLeader("no leader committed it within 5 s"),
                              NoLeader("no leader committed it within 5 s"),
                              RuntimeError("a bug")]

    async def tick(self) -> None:
        if not self.failures_left:
            self.retiring = True
            return
        raise self.failures_left.pop(0)


async def test_a_worker_finding_no_leader_logs_one_info_line_per_tick(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mes.workers.printer_worker"):
        await FailoverWorker().run()
    records = [r for r in caplog.records if r.name == "mes.workers.printer_worker"]
    no_leader = [r for r in records if "no leader" in r.getMessage()]
    assert len(no_leader) == 2
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in no_leader)
    # a real failure still says so, with its traceback
    bug = [r for r in records if r.levelno == logging.ERROR]
    assert len(bug) == 1 and bug[0].exc_info is not None
