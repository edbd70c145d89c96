"""Reads have their own connections: a long read neither stalls apply nor the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, func, select

from mes.node import FarmNode
from mes.state import listing
from mes.state.machine import StateMachine
from mes.state.ops import Op
from mes.state.tables import printers


def count_printers(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(printers)).scalar_one())


class HeldRead:
    """A read that counts the printers, waits until released, and counts them again."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: Connection) -> tuple[int, int]:
        before = count_printers(conn)
        self.inside.set()
        self.release.wait(20)
        return before, count_printers(conn)


@pytest.fixture
def machine() -> Iterator[StateMachine]:
    m = StateMachine()
    yield m
    m.close()


def create_printer(printer_id: str, ts: float = 1.0) -> dict[str, Any]:
    return {"op": Op.PRINTER_CREATE, "args": {"id": printer_id}, "ts": ts}


def test_a_read_holding_its_transaction_does_not_hold_up_apply(machine: StateMachine) -> None:
    held = HeldRead()
    with ThreadPoolExecutor(2) as pool:
        try:
            reading = pool.submit(machine.read, held)
            assert held.inside.wait(10)
            outcome = pool.submit(machine.apply, create_printer("p1")).result(timeout=5)
            assert outcome.ok
            assert machine.read(count_printers) == 1  # a new read sees the commit
        finally:
            held.release.set()
        assert reading.result(timeout=10) == (0, 0)  # the held read kept its one view


def test_restore_is_seen_by_readers(machine: StateMachine) -> None:
    machine.apply(create_printer("p1"))
    image = machine.snapshot()
    machine.apply(create_printer("p2", 2.0))
    assert machine.read(count_printers) == 2  # the reader connection is open and pooled
    held = HeldRead()
    with ThreadPoolExecutor(1) as pool:
        try:
            reading = pool.submit(machine.read, held)
            assert held.inside.wait(10)
            machine.restore(image)
            assert machine.read(count_printers) == 1
        finally:
            held.release.set()
        assert reading.result(timeout=10) == (2, 2)
    other = StateMachine()
    try:
        other.restore(machine.snapshot())
        assert other.read(count_printers) == 1
    finally:
        other.close()


def test_the_scratch_file_is_removed_on_close(tmp_path: Any) -> None:
    machine = StateMachine("sqlite+aiosqlite://", scratch_dir=tmp_path)
    machine.apply(create_printer("p1"))
    assert (tmp_path / "applied-state.sqlite").exists()
    machine.close()
    assert list(tmp_path.iterdir()) == []
    again = StateMachine("sqlite+aiosqlite://", scratch_dir=tmp_path)
    try:
        assert again.read(count_printers) == 0  # rebuilt at every start, like memory
    finally:
        again.close()


async def test_a_write_is_answered_while_a_read_holds_its_transaction(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    held = HeldRead()
    with ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(node.machine.read, held)
            assert await asyncio.to_thread(held.inside.wait, 10)
            answer = await api.post("/api/v1/printers", json={"id": "p1"})
            assert answer.status_code == 201, answer.text
            assert (await api.get("/api/v1/printers/p1")).status_code == 200
        finally:
            held.release.set()


async def test_a_slow_list_does_not_stall_the_event_loop(
        api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    original = listing.jobs_page
    # a node that has elected itself answers /health 200 (readiness)
    assert (await api.post("/api/v1/printers", json={"id": "ready"})).status_code == 201

    def slow_page(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        time.sleep(1.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(listing, "jobs_page", slow_page)
    listing_task = asyncio.create_task(api.get("/api/v1/print_jobs"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    health = await api.get("/api/v1/health")
    assert health.status_code == 200
    assert time.monotonic() - started < 1.0
    assert not listing_task.done()
    assert (await listing_task).status_code == 200
