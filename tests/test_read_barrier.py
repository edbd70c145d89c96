"""Read barriers alone: waiting for an applied index, and no-ops shared by linearizable reads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mes.node import FarmNode
from mes.raft.read_barrier import AppliedWaiter, Linearizer
from mes.raft.writer import NoLeader
from mes.state.machine import Outcome


async def test_a_waiter_wakes_when_another_thread_applies_the_index() -> None:
    applied = [0]
    waiter = AppliedWaiter(lambda: applied[0])
    assert await waiter.wait(0, 0.01)
    task = asyncio.create_task(waiter.wait(5, 5.0))
    await asyncio.sleep(0)

    def apply_on_raft_thread() -> None:
        for index in range(1, 6):
            waiter.on_apply({}, Outcome(index=index))

    thread = threading.Thread(target=apply_on_raft_thread)
    thread.start()
    assert await asyncio.wait_for(task, 2.0)
    thread.join()
    assert waiter.applied() == 5


async def test_a_waiter_sees_an_index_reached_without_notice_and_times_out() -> None:
    applied = [0]
    waiter = AppliedWaiter(lambda: applied[0])
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, applied.__setitem__, 0, 7)  # a snapshot installed: no apply notice
    assert await waiter.wait(7, 2.0)
    began = loop.time()
    assert not await waiter.wait(8, 0.2)
    assert loop.time() - began >= 0.19


async def test_concurrent_readers_share_no_ops_but_never_an_earlier_one() -> None:
    started: list[asyncio.Future[int]] = []

    async def commit() -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        started.append(future)
        return await future

    linearizer = Linearizer(commit)
    first = asyncio.create_task(linearizer.barrier())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(started) == 1  # the first no-op is under way
    # Readers arriving now must not use it: it may have been committed before they began.
    late = [asyncio.create_task(linearizer.barrier()) for _ in range(10)]
    await asyncio.sleep(0)
    started[0].set_result(10)
    assert await first == 10
    await asyncio.sleep(0)
    assert len(started) == 2
    started[1].set_result(11)
    assert await asyncio.gather(*late) == [11] * 10
    assert linearizer.noops == 2


async def test_a_failed_no_op_fails_its_readers_and_the_next_one_retries() -> None:
    calls = 0

    async def commit() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NoLeader("no leader")
        return 3

    linearizer = Linearizer(commit)
    with pytest.raises(NoLeader):
        await linearizer.barrier()
    assert await linearizer.barrier() == 3


async def test_a_linearizable_barrier_on_a_node_commits_a_no_op(node: FarmNode) -> None:
    before = node.applied.applied()
    index = await node.linearizer.barrier()
    assert index > before
    assert node.applied.applied() >= index
