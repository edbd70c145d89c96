"""Full garbage collections run on the node's schedule, never while it leads peers."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import weakref

import pytest

from mes.full_collections import FullCollections


def test_a_follower_collects_and_a_leader_of_peers_puts_it_off(
        caplog: pytest.LogCaptureFixture) -> None:
    leads_peers = [True]
    calls: list[int] = []

    def collect() -> int:
        calls.append(1)
        return 7

    collections = FullCollections(300, lambda: not leads_peers[0], collect)
    caplog.set_level(logging.INFO, "mes.full_collections")
    assert collections.step() is False and collections.step() is False
    assert calls == [] and collections.skipped == 2
    assert "put off: this node leads its peers" in caplog.text
    leads_peers[0] = False  # it follows now (or the cluster shrank to this node)
    assert collections.step() is True
    assert calls == [1] and collections.collections == 1 and collections.skipped == 0
    assert collections.last_pause is not None and collections.last_pause >= 0
    assert "full garbage collection: 7 unreachable objects" in caplog.text


def test_a_leader_that_waited_too_long_hands_leadership_off_then_collects() -> None:
    now, leading = [0.0], [True]
    hand_offs: list[float] = []
    collections = FullCollections(300, lambda: not leading[0], lambda: 0,
                                  hand_off=lambda: hand_offs.append(now[0]), patience=3600,
                                  clock=lambda: now[0])
    for now[0] in (0.0, 300.0, 3300.0):
        assert collections.step() is False
    assert hand_offs == []
    now[0] = 3600.0
    assert collections.step() is False and hand_offs == [3600.0]
    now[0] = 3900.0  # the transfer did not happen (no follower caught up): asked again
    assert collections.step() is False and hand_offs == [3600.0, 3900.0]
    leading[0], now[0] = False, 4200.0  # it follows now
    assert collections.step() is True and collections.hand_offs == 2
    assert collections.status() == {"done": 1, "put_off": 0, "hand_offs": 2,
                                    "last_seconds": 0.0}
    leading[0] = True  # leading again: the patience starts over
    for now[0] in (4500.0, 7800.0):
        assert collections.step() is False
    assert hand_offs == [3600.0, 3900.0]


def test_a_scheduled_turn_finds_a_cycle_the_young_generations_left() -> None:
    class Node:
        other: Node | None = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect()  # a and b now live in the oldest generation
    a.other = b
    freed: list[bool] = []
    probe = weakref.ref(a, lambda _: freed.append(True))
    del a, b
    gc.collect(1)  # the young generations never look at the old one
    assert probe() is not None
    assert FullCollections(300, lambda: True).step()
    assert probe() is None and freed == [True]


async def test_turns_follow_the_interval() -> None:
    collections = FullCollections(0.01, lambda: True, lambda: 0)
    task = asyncio.create_task(collections.run())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while collections.collections < 3:
            assert asyncio.get_running_loop().time() < deadline, "three turns"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()


def test_the_node_interpreter_makes_no_full_collection_of_its_own() -> None:
    code = ("import gc, mes.interpreter as i; i.tune_for_node(); "
            "junk = [[] for _ in range(3_000_000)]; "
            "print(gc.get_stats()[2]['collections'], gc.get_threshold()[2])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["0", str(2**31 - 1)], out
