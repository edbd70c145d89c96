"""A start that reaches the printer late never prints a job twice (issue 7, part 3).

Emulated printers (`mock-printer` subprocesses) heat for a few seconds before they move, so a
print cancelled while heating is told apart from one that printed: the emulator counts
starts, stops and jobs that moved. A loopback proxy holds the leader's start request and
delivers it later, as a slow network would.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.node import FarmNode
from mes.workers.pool import WorkerPool
from tests.emulators import Emulator, StartEmulator
from tests.farm_helpers import GCODE, eventually, running_farm, upload
from tests.late_proxy import LateProxy, starts_a_print

KEY = {"X-Api-Key": "mockkey"}
HEAT = 3.0  # seconds every emulated print heats before the printer moves
FAST = {"printer_worker_interval": 0.2, "printer_start_grace": 1.0}


async def add_printers(api: httpx.AsyncClient, urls: list[str], kind: str) -> None:
    spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 5000}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    for index, url in enumerate(urls):
        printer = {"id": f"p{index}", "api": kind, "url": url, "api_key": "mockkey",
                   "worker": True, "filament_id": "pla"}
        assert (await api.post("/api/v1/printers", json=printer)).status_code == 201


async def submit(api: httpx.AsyncClient, job_id: str, printer_id: str | None = None) -> None:
    stored = await upload(api)
    body: dict[str, Any] = {"id": job_id, "filament_id": "pla", "file_id": stored["id"],
                            "print_weight_in_grams": 5}
    if printer_id is not None:
        body["printer_id"] = printer_id
    assert (await api.post("/api/v1/print_jobs", json=body)).status_code == 201


async def job_of(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await api.get(f"/api/v1/print_jobs/{job_id}")).json()
    return data


async def wait_status(api: httpx.AsyncClient, job_id: str, status: str,
                      timeout: float = 40) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        job = await job_of(api, job_id)
        return job if job["status"] == status else None

    return await eventually(reached, timeout, f"job {job_id} {status}", interval=0.1)


async def printer_status(api: httpx.AsyncClient, printer_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await api.get(f"/api/v1/printers/{printer_id}/status")).json()
    return data


def start_at_printer(emulator: Emulator, index: int, kind: str, name: str) -> None:
    """What a late message does: store `name` and start it, straight at the printer."""
    with emulator.client(index, headers=KEY) as printer:
        if kind == "OctoPrint":
            stored = printer.post("/api/files/local", files={"file": (name, GCODE)},
                                  data={"print": "false"})
            started = printer.post(f"/api/files/local/{name}",
                                   json={"command": "select", "print": True})
        else:
            stored = printer.put(f"/api/v1/files/local/{name}", content=GCODE,
                                 headers={"Overwrite": "?1"})
            started = printer.post(f"/api/v1/files/local/{name}")
    assert stored.status_code == 201 and started.status_code == 204, started.text


async def stopped(emulator: Emulator, index: int, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = emulator.status(index)
        return status if status["stops"].get(name) else None

    return await eventually(check, 10, f"{name} stopped at printer {index}", interval=0.05)


async def held_for_an_operator(api: httpx.AsyncClient, printer_id: str,
                               name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = await printer_status(api, printer_id)
        return status if status["attention"] else None

    status = await eventually(check, 10, f"printer {printer_id} held for an operator")
    assert name in status["attention"] and status["bed_clear"] is False
    return status


def loud(caplog: pytest.LogCaptureFixture, name: str) -> bool:
    return any(r.levelno >= logging.ERROR and name in r.getMessage() for r in caplog.records)


def pool_of(node: FarmNode) -> WorkerPool:
    """The node's running worker pool."""
    assert node.workers is not None and node.workers.pool is not None
    return node.workers.pool


async def some_ticks(node: FarmNode, printer_id: str, count: int) -> None:
    """Let the printer's worker run `count` more ticks."""
    pool = pool_of(node)
    worker = pool.workers[printer_id][0]
    target = worker.ticks + count

    async def ticked() -> bool:
        return worker.ticks >= target

    await eventually(ticked, 10, f"{count} ticks of {printer_id}")


@pytest.mark.parametrize("kind", ["OctoPrint", "PrusaLink"])
async def test_a_late_start_of_a_done_job_is_cancelled_before_the_printer_moves(
        tmp_path: Path, start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture,
        kind: str) -> None:
    emulator = start_emulator(kind, job_time=1.0, heat_time=HEAT)
    async with running_farm(tmp_path, **FAST) as (node, api):
        await add_printers(api, [emulator.url(0)], kind)
        await submit(api, "j")
        await wait_status(api, "j", "Done")
        assert emulator.status(0)["moved"] == {"mes-j.gcode": 1}

        began = time.monotonic()
        start_at_printer(emulator, 0, kind, "mes-j.gcode")
        status = await stopped(emulator, 0, "mes-j.gcode")
        assert time.monotonic() - began < HEAT
        assert status["starts"] == {"mes-j.gcode": 2}
        assert status["moved"] == {"mes-j.gcode": 1}  # the late start never moved the printer
        await held_for_an_operator(api, "p0", "mes-j.gcode")
        assert loud(caplog, "mes-j.gcode")
        await some_ticks(node, "p0", 5)  # the automatic bed clearing leaves it held
        assert (await printer_status(api, "p0"))["attention"]
        history = (await api.get("/api/v1/print_jobs/j/history")).json()
        assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]

        # The operator looked: clearing the bed frees the printer for the next job.
        cleared = (await api.post("/api/v1/printers/p0/bed_cleared")).json()
        assert (cleared["attention"], cleared["bed_clear"]) == (None, True)
        await submit(api, "next")
        await wait_status(api, "next", "Done")
        assert emulator.status(0)["moved"] == {"mes-j.gcode": 1, "mes-next.gcode": 1}


async def test_a_late_start_of_a_job_running_elsewhere_is_cancelled(
        tmp_path: Path, start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture) -> None:
    emulator = start_emulator("OctoPrint", count=2, job_time=60, heat_time=HEAT)
    async with running_farm(tmp_path, **FAST) as (_, api):
        await add_printers(api, [emulator.url(0), emulator.url(1)], "OctoPrint")
        await submit(api, "j", printer_id="p0")
        await wait_status(api, "j", "Running")

        start_at_printer(emulator, 1, "OctoPrint", "mes-j.gcode")
        status = await stopped(emulator, 1, "mes-j.gcode")
        assert status["moved"] == {}
        await held_for_an_operator(api, "p1", "mes-j.gcode")
        assert loud(caplog, "mes-j.gcode")
        job = await job_of(api, "j")
        assert (job["status"], job["assigned_printer_id"]) == ("Running", "p0")
        assert emulator.status(0)["current_file"] == "mes-j.gcode"


@pytest.mark.parametrize("leader_change", [False, True], ids=["same-leader", "new-leader"])
@pytest.mark.parametrize("kind", ["OctoPrint", "PrusaLink"])
async def test_a_start_delivered_late_never_prints_twice(
        tmp_path: Path, start_emulator: StartEmulator, kind: str, leader_change: bool) -> None:
    """The issue's reproduction, scaled down: the leader's start is held 12 s (the issue: 25
    and 40 s against a 15 s grace); the job is started again meanwhile and finishes."""
    emulator = start_emulator(kind, job_time=1.0, heat_time=2.0)
    proxy = await LateProxy(emulator.port, starts_a_print, delay=12.0).start()
    try:
        async with running_farm(tmp_path, **FAST) as (node, api):
            await add_printers(api, [proxy.url], kind)
            await submit(api, "j")

            async def held() -> bool:
                return bool(proxy.held)

            await eventually(held, 20, "the start held by the proxy")
            first = pool_of(node)
            if leader_change:  # the driver is deposed with its start on the way
                first.ctx.fenced = True

            await wait_status(api, "j", "Done")

            async def delivered() -> bool:
                return proxy.delivered()

            await eventually(delivered, 30, "the held start delivered")
            await some_ticks(node, "p0", 3)
            status = emulator.status(0)
            assert status["starts"] == {"mes-j.gcode": 1}, proxy.late_answers
            assert status["moved"] == {"mes-j.gcode": 1}
            # the late start found no file (404) or a busy printer (409): it started nothing
            assert proxy.late_answers[0].split()[1] in (b"404", b"409"), proxy.late_answers
            history = (await api.get("/api/v1/print_jobs/j/history")).json()
            assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
            assert (pool_of(node) is not first) == leader_change
            assert (await printer_status(api, "p0"))["attention"] is None
    finally:
        await proxy.close()


async def test_a_late_start_of_a_job_canceled_while_starting_is_cancelled(
        tmp_path: Path, start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture) -> None:
    emulator = start_emulator("OctoPrint", job_time=1.0, heat_time=HEAT)
    proxy = await LateProxy(emulator.port, starts_a_print, delay=4.0).start()
    try:
        async with running_farm(tmp_path, **FAST) as (_, api):
            await add_printers(api, [proxy.url], "OctoPrint")
            await submit(api, "j")

            async def held() -> bool:
                return bool(proxy.held)

            await eventually(held, 20, "the start held by the proxy")
            canceled = await api.post("/api/v1/print_jobs/j/status?status=Canceled")
            assert canceled.status_code == 200, canceled.text

            async def delivered() -> bool:
                return proxy.delivered()

            await eventually(delivered, 30, "the held start delivered")
            assert proxy.late_answers[0].split()[1] == b"204"  # the printer took it
            status = await stopped(emulator, 0, "mes-j.gcode")
            assert status["moved"] == {}
            await held_for_an_operator(api, "p0", "mes-j.gcode")
            assert loud(caplog, "mes-j.gcode")
            assert (await job_of(api, "j"))["status"] == "Canceled"
    finally:
        await proxy.close()


async def test_a_start_answered_by_a_dropped_connection_counts_as_maybe_started(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    """"Server disconnected" after the request left is not "not started": the job is not
    queued again (and maybe sent to a second printer) while the printer shows it printing."""
    emulator = start_emulator("OctoPrint", job_time=1.0, heat_time=1.0)
    proxy = await LateProxy(emulator.port, starts_a_print, delay=0.3, drop_client=True).start()
    try:
        async with running_farm(tmp_path, **FAST) as (node, api):
            await add_printers(api, [proxy.url], "OctoPrint")
            await submit(api, "j")
            await wait_status(api, "j", "Done")
            pool = pool_of(node)
            assert pool.claims == 1  # never given back to the queue
            assert proxy.held and proxy.late_answers[0].split()[1] == b"204"
            assert emulator.status(0)["starts"] == {"mes-j.gcode": 1}
            history = (await api.get("/api/v1/print_jobs/j/history")).json()
            assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
    finally:
        await proxy.close()
