"""A farm of in-process mock printers on one node: scheduling, printing, beds, leader change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.node import FarmNode
from mes.printers.mock import MockPrinter
from tests.farm_helpers import eventually, running_farm, upload


@pytest.fixture
async def farm_pair(tmp_path: Path, request: pytest.FixtureRequest
                    ) -> AsyncIterator[tuple[FarmNode, httpx.AsyncClient]]:
    async with running_farm(tmp_path, **getattr(request, "param", {})) as pair:
        yield pair


@pytest.fixture
def farm_node(farm_pair: tuple[FarmNode, httpx.AsyncClient]) -> FarmNode:
    return farm_pair[0]


@pytest.fixture
def farm(farm_pair: tuple[FarmNode, httpx.AsyncClient]) -> httpx.AsyncClient:
    return farm_pair[1]


async def add_printers(api: httpx.AsyncClient, count: int, spool: str = "pla") -> None:
    body = {"id": spool, "type": "PLA", "color": "black", "total_weight_in_grams": 5000}
    assert (await api.post("/api/v1/filaments", json=body)).status_code == 201
    for i in range(count):
        printer = {"id": f"m{i}", "api": "Mock", "url": f"http://mock-printer{i}:5000",
                   "opcua_name": f"Printer{i}", "worker": True, "filament_id": spool}
        assert (await api.post("/api/v1/printers", json=printer)).status_code == 201


async def ticks_pass(node: FarmNode, printer_id: str, ticks: int = 3) -> None:
    """Wait until the printer's worker has ticked `ticks` more times (scheduler included)."""
    async def worker_ticks() -> int:
        pool = node.workers.pool
        entry = pool.workers.get(printer_id) if pool else None
        return entry[0].ticks if entry else 0

    start = await worker_ticks()

    async def advanced() -> bool:
        return await worker_ticks() >= start + ticks

    await eventually(advanced, 10, f"{ticks} ticks of printer {printer_id}'s worker")


async def jobs(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = (await api.get("/api/v1/print_jobs")).json()
    return data


async def test_five_mock_printers_print_twenty_jobs(farm: httpx.AsyncClient,
                                                    farm_node: FarmNode) -> None:
    await add_printers(farm, 5)
    stored = await upload(farm)
    for n in range(20):
        body = {"id": f"j{n:02d}", "filament_id": "pla", "file_id": stored["id"],
                "print_weight_in_grams": 10}
        created = await farm.post("/api/v1/print_jobs", json=body)
        assert created.status_code == 201
        hold = created.json()["hold"]  # at most waiting for a turn, never a fault
        assert hold is None or hold["code"] in ("printer_busy", "no_printer_ready",
                                                "printer_not_seen", "starting"), hold

    async def all_done() -> bool:
        return all(j["status"] == "Done" for j in await jobs(farm))

    await eventually(all_done, 60, "20 jobs Done")
    spool = (await farm.get("/api/v1/filaments/pla")).json()
    assert spool["remaining_weight_in_grams"] == 5000 - 20 * 10
    assert spool["reserved_weight_in_grams"] == 0
    done = await jobs(farm)
    assert {j["assigned_printer_id"] for j in done} == {f"m{i}" for i in range(5)}
    for job in done:
        history = (await farm.get(f"/api/v1/print_jobs/{job['id']}/history")).json()
        assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
    # every job started exactly once, on the printer it was assigned to
    pool = farm_node.workers.pool
    assert pool is not None
    starts: dict[str, int] = {}
    for worker, _, _ in pool.workers.values():
        assert isinstance(worker.client, MockPrinter)
        for name, count in worker.client.starts.items():
            starts[name] = starts.get(name, 0) + count
    assert starts == {f"mes-j{n:02d}.gcode": 1 for n in range(20)}
    async def settled() -> dict[str, Any] | None:
        status: dict[str, Any] = (await farm.get("/api/v1/printers/m0/status")).json()
        return status if status["state"] in ("idle", "finished") else None

    status = await eventually(settled, 10, "printer m0's status to show it stopped")
    assert status["age_seconds"] is not None and status["age_seconds"] < 5


@pytest.mark.parametrize("farm_pair", [{"mock_printer_job_time": 400}], indirect=["farm_pair"])
async def test_leader_change_marks_mock_prints_lost_not_done(farm: httpx.AsyncClient,
                                                             farm_node: FarmNode) -> None:
    await add_printers(farm, 2)
    stored = await upload(farm)
    for n in range(2):
        await farm.post("/api/v1/print_jobs", json={
            "id": f"long{n}", "filament_id": "pla", "file_id": stored["id"],
            "print_weight_in_grams": 25})

    async def both_running() -> bool:
        return [j["status"] for j in await jobs(farm)] == ["Running", "Running"]

    await eventually(both_running, 20, "both jobs Running")
    # A new leader: the workers (and the mock printers living with them) start afresh.
    await farm_node.stop_background()
    await farm_node.start_background()

    async def both_lost() -> list[dict[str, Any]] | None:
        current = await jobs(farm)
        return current if all(j["status"] == "Canceled" for j in current) else None

    lost = await eventually(both_lost, 20, "both jobs marked lost")
    for job in lost:
        history = (await farm.get(f"/api/v1/print_jobs/{job['id']}/history")).json()
        assert history[-1]["from_status"] == "Running"
        assert history[-1]["to_status"] == "Canceled"
        assert "mock printer was restarted" in history[-1]["cause"]
    spool = (await farm.get("/api/v1/filaments/pla")).json()
    assert spool["remaining_weight_in_grams"] == 5000  # lost prints charge nothing
    assert spool["reserved_weight_in_grams"] == 0


@pytest.mark.parametrize("farm_pair", [{"mock_printer_job_time": 40}], indirect=["farm_pair"])
async def test_a_pool_that_comes_back_adopts_the_mock_print(farm: httpx.AsyncClient,
                                                            farm_node: FarmNode) -> None:
    # The node's workers stop (a lapsed lease) and start again on the same node: the mock
    # printer kept printing meanwhile, as a real one would, and its print is adopted.
    await add_printers(farm, 1)
    stored = await upload(farm)
    await farm.post("/api/v1/print_jobs", json={
        "id": "kept", "filament_id": "pla", "file_id": stored["id"],
        "print_weight_in_grams": 25})

    async def running() -> bool:
        return bool((await farm.get("/api/v1/print_jobs/kept")).json()["status"] == "Running")

    await eventually(running, 20, "the job Running")
    host = farm_node.workers
    assert host is not None and host.pool is not None
    first = host.pool
    await host._end_pool()  # as a lapsed lease does

    async def done() -> str | None:
        status = str((await farm.get("/api/v1/print_jobs/kept")).json()["status"])
        return status if status in ("Done", "Canceled") else None

    assert await eventually(done, 60, "the job ended") == "Done"
    assert host.pool is not None and host.pool is not first  # a new pool adopted it
    history = (await farm.get("/api/v1/print_jobs/kept/history")).json()
    assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
    spool = (await farm.get("/api/v1/filaments/pla")).json()
    assert spool["remaining_weight_in_grams"] == 5000 - 25


@pytest.mark.parametrize("farm_pair", [{"mock_printer_job_time": 60, "auto_clear_bed": False}],
                         indirect=["farm_pair"])
async def test_pause_resume_cancel_and_bed_clearing(farm: httpx.AsyncClient,
                                                    farm_node: FarmNode) -> None:
    await add_printers(farm, 1)
    stored = await upload(farm)
    await farm.post("/api/v1/print_jobs", json={"id": "a", "printer_id": "m0",
                                                "filament_id": "pla", "file_id": stored["id"],
                                                "print_weight_in_grams": 5})

    async def job_a() -> dict[str, Any]:
        data: dict[str, Any] = (await farm.get("/api/v1/print_jobs/a")).json()
        return data

    await eventually(lambda: _phase(job_a, "printing"), 20, "job a printing")
    assert (await farm.post("/api/v1/print_jobs/a/pause")).status_code == 200
    await eventually(lambda: _phase(job_a, "paused"), 10, "job a paused at the printer")
    printer_state = (await farm.get("/api/v1/printers/m0/status")).json()["state"]
    assert printer_state in ("paused", "printing")  # telemetry may lag one tick
    assert (await farm.post("/api/v1/print_jobs/a/resume")).status_code == 200
    await eventually(lambda: _phase(job_a, "printing"), 10, "job a resumed")
    canceled = await farm.post("/api/v1/print_jobs/a/status", params={"status": "canceled"})
    assert canceled.json()["status"] == "Canceled"

    async def printer_idle() -> bool:
        status = (await farm.get("/api/v1/printers/m0/status")).json()
        return bool(status["state"] == "idle")

    await eventually(printer_idle, 10, "the mock printer to stop printing")
    printer = (await farm.get("/api/v1/printers/m0")).json()
    assert printer["bed_clear"] is False
    # A second job waits for the bed to be cleared.
    await farm.post("/api/v1/print_jobs", json={"id": "b", "printer_id": "m0",
                                                "filament_id": "pla", "file_id": stored["id"],
                                                "print_weight_in_grams": 5})
    await ticks_pass(farm_node, "m0")
    assert (await farm.get("/api/v1/print_jobs/b")).json()["phase"] is None
    assert (await farm.post("/api/v1/printers/m0/bed_cleared")).json()["bed_clear"] is True
    await eventually(lambda: _phase(lambda: _get(farm, "b"), "printing"), 20, "job b printing")


async def _get(farm: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await farm.get(f"/api/v1/print_jobs/{job_id}")).json()
    return data


async def _phase(fetch: Any, phase: str) -> bool:
    job = await fetch()
    return bool(job["phase"] == phase)


@pytest.mark.parametrize("farm_pair", [{"mock_printer_job_time": 4}], indirect=["farm_pair"])
async def test_reserved_printer_is_skipped_until_released(farm: httpx.AsyncClient,
                                                         farm_node: FarmNode) -> None:
    await add_printers(farm, 1)
    reserved = await farm.post("/api/v1/printers/m0/reservation",
                               json={"holder": "robot-cell", "duration_seconds": 3600})
    assert reserved.status_code == 200 and reserved.json()["reserved_by"] == "robot-cell"
    other = await farm.post("/api/v1/printers/m0/reservation",
                            json={"holder": "someone-else", "duration_seconds": 60})
    assert other.status_code == 409
    stored = await upload(farm)
    await farm.post("/api/v1/print_jobs", json={"id": "r", "filament_id": "pla",
                                                "file_id": stored["id"],
                                                "print_weight_in_grams": 5})
    await ticks_pass(farm_node, "m0")
    assert (await _get(farm, "r"))["phase"] is None
    assert (await farm.delete("/api/v1/printers/m0/reservation")).status_code == 200

    async def done() -> bool:
        return (await _get(farm, "r"))["status"] == "Done"

    await eventually(done, 20, "the job to print once the reservation ended")


async def test_unreachable_printers_do_not_block_the_others(
        farm: httpx.AsyncClient, farm_node: FarmNode) -> None:
    import socket

    await add_printers(farm, 2)
    with socket.socket() as closed:  # a port that refuses connections
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    await farm.post("/api/v1/printers", json={
        "id": "dead", "api": "OctoPrint", "url": f"http://127.0.0.1:{dead_port}",
        "api_key": "x", "worker": True, "filament_id": "pla"})
    await farm.post("/api/v1/printers", json={  # nothing listens on the discard port
        "id": "nothing", "api": "PrusaLink", "url": "http://127.0.0.1:9/not-a-printer",
        "worker": True, "filament_id": "pla"})
    stored = await upload(farm)
    for n in range(4):
        await farm.post("/api/v1/print_jobs", json={"id": f"g{n}", "filament_id": "pla",
                                                    "file_id": stored["id"],
                                                    "print_weight_in_grams": 1})

    async def all_done() -> bool:
        return all(j["status"] == "Done" for j in await jobs(farm))

    await eventually(all_done, 30, "every job Done on the working printers")
    assert {j["assigned_printer_id"] for j in await jobs(farm)} <= {"m0", "m1"}

    async def dead_offline() -> bool:
        status = (await farm.get("/api/v1/printers/dead/status")).json()
        return bool(status["state"] == "offline" and status["error"])

    await eventually(dead_offline, 10, "the dead printer shown offline with its error")


async def test_job_without_stored_file_is_held_with_a_reason(farm: httpx.AsyncClient,
                                                             farm_node: FarmNode) -> None:
    await add_printers(farm, 1)
    created = await farm.post("/api/v1/print_jobs", json={
        "id": "rec", "filament_id": "pla", "filepath": "/nfs/part.gcode",
        "print_weight_in_grams": 5})
    assert created.status_code == 201
    assert "never sent to a printer" in created.json()["hold_reason"]
    await ticks_pass(farm_node, "m0")
    job = await _get(farm, "rec")
    assert job["status"] == "Queued" and job["assigned_printer_id"] is None


@pytest.mark.parametrize("farm_pair", [{"mock_printer_job_time": 400}], indirect=True)
async def test_printer_error_marks_the_lost_print_with_its_cause(
        farm: httpx.AsyncClient, farm_node: FarmNode) -> None:
    await add_printers(farm, 1)
    stored = await upload(farm)
    await farm.post("/api/v1/print_jobs", json={"id": "hot", "filament_id": "pla",
                                                "file_id": stored["id"],
                                                "print_weight_in_grams": 9})
    await eventually(lambda: _phase(lambda: _get(farm, "hot"), "printing"), 20, "printing")
    pool = farm_node.workers.pool
    assert pool is not None
    mock = pool.workers["m0"][0].client
    assert isinstance(mock, MockPrinter)
    mock.fail("thermal runaway on the hotend")

    async def lost() -> dict[str, Any] | None:
        job = await _get(farm, "hot")
        return job if job["status"] == "Canceled" else None

    await eventually(lost, 10, "the job marked lost")
    history = (await farm.get("/api/v1/print_jobs/hot/history")).json()
    assert history[-1]["cause"] == "print lost: printer error: thermal runaway on the hotend"

    async def shows_error() -> bool:
        status = (await farm.get("/api/v1/printers/m0/status")).json()
        return bool(status["state"] == "error" and "thermal runaway" in status["error"])

    await eventually(shows_error, 10, "the printer's status to show the error")
    spool = (await farm.get("/api/v1/filaments/pla")).json()
    assert (spool["remaining_weight_in_grams"], spool["reserved_weight_in_grams"]) == (5000, 0)


class LostAnswer:
    """A mock printer whose start works but whose answer never arrives (a read timeout)."""

    def __init__(self, inner: MockPrinter) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(self, name: str) -> None:
        from mes.printers.base import PrinterNoAnswer

        await self.inner.start(name)
        raise PrinterNoAnswer("no answer in time")


@pytest.mark.parametrize("farm_pair", [{"mock_printer_job_time": 10, "auto_schedule": False}],
                         indirect=True)
async def test_a_start_whose_answer_is_lost_is_not_sent_twice(
        farm: httpx.AsyncClient, farm_node: FarmNode) -> None:
    await add_printers(farm, 1)

    async def worker_ready() -> bool:
        pool = farm_node.workers.pool
        return pool is not None and "m0" in pool.workers

    await eventually(worker_ready, 10, "the worker of m0")
    pool = farm_node.workers.pool
    assert pool is not None
    worker = pool.workers["m0"][0]
    mock = worker.client
    assert isinstance(mock, MockPrinter)
    worker.client = LostAnswer(mock)  # type: ignore[assignment]
    stored = await upload(farm)
    await farm.post("/api/v1/print_jobs", json={"id": "t", "filament_id": "pla",
                                                "file_id": stored["id"],
                                                "print_weight_in_grams": 3})
    pool.ctx.node.settings.auto_schedule = True

    async def done() -> bool:
        return (await _get(farm, "t"))["status"] == "Done"

    await eventually(done, 30, "the job Done")
    assert mock.starts == {"mes-t.gcode": 1}
    history = (await farm.get("/api/v1/print_jobs/t/history")).json()
    assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
