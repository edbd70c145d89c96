"""The embedded OPC UA server's start-up, address-space build and mirror cost on one node.

Fills a single in-process node with N printers (each with its own spool and a queued job),
starts the embedded server, and reports: time until the endpoint listens, model load time,
farm build time and the OPC UA thread's CPU for it; then commits telemetry for every printer
once a second (as the workers do) and reports the OPC UA thread's CPU share while mirroring.

    .venv/bin/python bench/opcua_build.py [--printers 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mes.config import Settings
from mes.node import FarmNode
from mes.opcua.server import EmbeddedServer
from mes.state.ops import Op
from mes.state.tables import assignments
from tests.ports import free_port

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def fill(node: FarmNode, count: int) -> None:
    async def submit(op: str, args: dict[str, Any]) -> None:
        outcome = await node.writer.submit(op, args)
        assert outcome.ok, outcome.error

    for start in range(0, count, 100):
        ids = range(start, min(start + 100, count))
        await asyncio.gather(*(submit(Op.FILAMENT_CREATE, {
            "id": f"s{i}", "type": "PLA", "color": "black", "total_weight_in_grams": 1000})
            for i in ids))
        await asyncio.gather(*(submit(Op.PRINTER_CREATE, {
            "id": f"p{i}", "api": "Mock", "url": f"http://mock-{i}:5000", "worker": False,
            "opcua_name": f"Printer{i}", "filament_id": f"s{i}", "company": "Prusa",
            "model": "MK4"}) for i in ids))
        await asyncio.gather(*(submit(Op.JOB_CREATE, {
            "id": f"j{i}", "filament_id": f"s{i}", "printer_id": f"p{i}",
            "filepath": "part.gcode", "print_weight_in_grams": 10}) for i in ids))


def resident_mb() -> float:
    """This process's resident memory now (MB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def report_lag(when: str, lags: list[float]) -> None:
    """Print how late the main loop's 10 ms sleeps woke (GIL contention), then forget them."""
    ordered = sorted(lags)
    lags.clear()
    print(f"main loop {when}: 10 ms sleeps woke late by p50 "
          f"{ordered[len(ordered) // 2] * 1000:.1f} ms, p99 "
          f"{ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")


async def place_all(node: FarmNode) -> dict[str, int]:
    """Assign every printer to this node, as the leader's balancer would; returns each
    printer's assignment epoch (worker commands carry it)."""
    me = node.settings.raft_self
    assert (await node.writer.submit(Op.NODE_LEASE, {"node": me})).ok
    leader = (await node.writer.submit(Op.LEADER_BEGIN, {"leader": me})).value["epoch"]
    moves = [{"printer_id": printer_id, "epoch": 0, "node": me} for printer_id in
             node.machine.read(lambda c: c.execute(select(assignments.c.printer_id))
                               .scalars().all())]
    outcome = await node.writer.submit(Op.SHARD_ASSIGN, {
        "leader_epoch": leader, "now": time.time(), "moves": moves})
    assert outcome.ok, outcome.error
    rows = node.machine.read(lambda c: c.execute(
        select(assignments.c.printer_id, assignments.c.epoch)).all())
    return {row.printer_id: row.epoch for row in rows}


def statuses(count: int, tick: int, epochs: dict[str, int]) -> list[dict[str, Any]]:
    return [{"printer_id": f"p{i}", "epoch": epochs[f"p{i}"], "state": "printing",
             "observed_at": time.time(),
             "nozzle_actual": 200.0 + (tick + i) % 10, "nozzle_target": 210.0,
             "bed_actual": 55.0 + (tick + i) % 5, "bed_target": 60.0,
             "progress": float(tick % 100), "time_printed": float(tick),
             "time_left": float(1000 - tick)} for i in range(count)]


async def main(count: int, seconds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp) / "data",  # type: ignore[call-arg]
                            upload_path=Path(tmp) / "upload",
                            raft_self=f"127.0.0.1:{free_port()}",
                            opcua_endpoint=f"opc.tcp://127.0.0.1:{free_port()}/mes/")
        node = FarmNode(settings)
        try:
            while not node.raft.is_leader():
                await asyncio.sleep(0.05)
            filled = time.perf_counter()
            await fill(node, count)
            print(f"filled {count} printers, spools and jobs in "
                  f"{time.perf_counter() - filled:.1f} s")
            lags: list[float] = []

            async def probe() -> None:  # the REST API's loop: how late a 10 ms sleep wakes
                while True:
                    before = time.perf_counter()
                    await asyncio.sleep(0.01)
                    lags.append(time.perf_counter() - before - 0.01)

            prober = asyncio.create_task(probe())
            server = EmbeddedServer(node)
            started = time.perf_counter()
            await server.start()
            assert server._thread is not None and server._thread.native_id is not None
            tid = server._thread.native_id
            listening = time.perf_counter() - started
            while not server.ready.is_set():
                await asyncio.sleep(0.05)
            ready = time.perf_counter() - started
            cpu_ready = thread_cpu(tid)
            report_lag("while the OPC UA server started and built", lags)
            print(f"endpoint listening after {listening:.2f} s; model loaded in "
                  f"{server.model_seconds:.2f} s; farm built in {server.build_seconds:.2f} s, "
                  f"{server.mirror.build_cpu_seconds if server.mirror else 0:.2f} s CPU "
                  f"({server.space.node_count if server.space else 0} nodes); ready after "
                  f"{ready:.2f} s; OPC UA thread CPU until ready {cpu_ready:.2f} s")
            print(f"node's memory when ready: {resident_mb():.0f} MB resident "
                  f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
                  "goals: ready within 5 s, 400 MB)")
            epochs = await place_all(node)
            cpu0, wall0 = thread_cpu(tid), time.perf_counter()
            for tick in range(seconds):
                outcome = await node.writer.submit(Op.PRINTER_TELEMETRY, {
                    "statuses": statuses(count, tick, epochs)})
                assert outcome.ok, outcome.error
                await asyncio.sleep(max(0.0, wall0 + tick + 1 - time.perf_counter()))
            share = (thread_cpu(tid) - cpu0) / (time.perf_counter() - wall0)
            prober.cancel()
            report_lag("while mirroring telemetry", lags)
            passes = server.mirror.passes if server.mirror else 0
            print(f"mirroring telemetry of {count} printers at 1 Hz (8 values each, no "
                  f"subscriber): OPC UA thread {share * 100:.1f}% of a core, {passes} passes")
            await server.stop()
        finally:
            node.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(options.printers, options.seconds))
