"""A backlog of committed entries never holds a Raft tick for long (issue 20 §2).

pysyncobj applied every committed entry in one tick; 20,000 jobs written as 200 orders of
100 held ticks for seconds, and with them heartbeats and answers: the term went from 1 to
317. Here each apply takes 10 ms and 100 entries commit at once: without the budget one
tick took 1.1 s; with it (0.04 s) the longest took 0.05 s, and every entry is still
applied, in order, with its caller answered.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mes.raft.node import RaftNode, RaftTuning, build_conf
from mes.raft.snapshot import SnapshotFiles
from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from tests.polling import wait_for
from tests.ports import free_port

ENTRIES = 100
APPLY_SECONDS = 0.01


def test_a_backlog_is_applied_in_short_ticks(tmp_path: Path) -> None:
    machine = StateMachine()
    applied: list[int] = []

    def slow(_: Mapping[str, Any], outcome: Outcome) -> None:
        time.sleep(APPLY_SECONDS)  # a big command's apply (an order of 100 jobs: ~30 ms)
        applied.append(outcome.index)

    machine.add_listener(slow)
    snapshots = SnapshotFiles(machine)
    conf = build_conf(tmp_path / "n0", snapshots, 100_000, 3600.0, RaftTuning())
    node = RaftNode(f"127.0.0.1:{free_port()}", [], machine, conf, snapshots)
    ticks: list[float] = []
    gate = threading.Event()  # cleared: the Raft thread waits in its tick (commands queue up)
    gate.set()
    waiting = threading.Event()

    def tick() -> None:
        ticks.append(time.monotonic())
        if not gate.is_set():
            waiting.set()
            gate.wait(30)

    node.addOnTickCallback(tick)
    try:
        wait_for(node.is_leader, 10, "the lone node to lead")
        answered = threading.Semaphore(0)
        results: list[Any] = []

        def done(result: Any, error: int) -> None:
            results.append((result, error))
            answered.release()

        gate.clear()
        assert waiting.wait(10)
        for i in range(ENTRIES):
            node.apply_command({"op": str(Op.FILAMENT_CREATE), "v": 1, "rid": f"r{i}",
                                "ts": 1.0, "args": {"id": f"f{i}", "type": "PLA",
                                                    "color": "x",
                                                    "total_weight_in_grams": 100}},
                               callback=done)
        began = len(ticks)
        gate.set()  # all of them are appended in one tick, committed and applied together
        for _ in range(ENTRIES):
            assert answered.acquire(timeout=60)
        during = ticks[began - 1:]
        longest = max(b - a for a, b in itertools.pairwise(during))
        # The whole backlog takes about ENTRIES * APPLY_SECONDS = 1 s.
        assert longest < 0.5, f"a tick took {longest:.2f} s"  # the budget is 0.04 s
        assert all(error == 0 and result.error is None for result, error in results)
        assert len(applied) >= ENTRIES and applied == sorted(applied)
    finally:
        gate.set()
        node.destroy_synchronous()
        machine.close()
