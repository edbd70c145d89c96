"""Event stream and webhook delivery on a real single-node server process.

Phase 1, stream capacity: writers post orders of 100 jobs (about 200 change events per
command) while 1 or more SSE clients read `/api/v1/events`; prints events/s each client
received, the server's CPU seconds per 10,000 events streamed and the commit-to-client delay
(the command's `ts`, set when it was submitted, against the arrival time).
Phase 2, webhook latency: a loopback receiver gets `job.created` for jobs posted one at a
time; prints the delay from the POST's answer to the receiver's arrival (p50, p95, max).

Phase 0 (`--synthetic`), the stream alone: an in-process node served by uvicorn, a thread
feeding the hub outcomes of 200 events each as fast as it can (as pysyncobj's thread would,
without Raft or SQLite), and `curl -N` clients counting what arrives.

    .venv/bin/python bench/events.py [--seconds 15] [--clients 1] [--hooks 50] [--synthetic]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from mes.state.ops import Op  # noqa: E402
from tests.auth import admin_headers  # noqa: E402
from tests.cluster import Cluster  # noqa: E402
from tests.webhook_receiver import webhook_receiver  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def reader(base: str, stop: asyncio.Event, delays: list[float]) -> int:
    """Count change events until `stop`; record the delay of every 100th."""
    count = 0
    async with httpx.AsyncClient(base_url=base, headers=admin_headers(), timeout=None) as c, \
            c.stream("GET", "/api/v1/events", params={"telemetry": "false"}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {\"entity\""):
                count += 1
                if count % 100 == 0:
                    delays.append(time.time() - json.loads(line[6:])["ts"])
            if stop.is_set():
                break
    return count


async def writer(base: str, stop: asyncio.Event, number: int) -> int:
    orders = 0
    async with httpx.AsyncClient(base_url=base, headers=admin_headers(), timeout=30) as c:
        while not stop.is_set():
            jobs = [{"filament_id": "s", "filepath": "a.gcode", "print_weight_in_grams": 1}
                    for _ in range(100)]
            response = await c.post("/api/v1/orders", json={"jobs": jobs})
            orders += response.status_code == 201
    return orders


async def stream_phase(base: str, pid: int, seconds: float, clients: int) -> None:
    async with httpx.AsyncClient(base_url=base, headers=admin_headers()) as c:
        await c.post("/api/v1/filaments", json={"id": "s", "type": "PLA", "color": "red",
                                                "total_weight_in_grams": 100_000})
    stop = asyncio.Event()
    delays: list[float] = []
    readers = [asyncio.create_task(reader(base, stop, delays)) for _ in range(clients)]
    await asyncio.sleep(0.5)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    writers = [asyncio.create_task(writer(base, stop, n)) for n in range(4)]
    await asyncio.sleep(seconds)
    stop.set()
    orders = sum(await asyncio.gather(*writers))
    # one more event wakes the readers so they see `stop`
    async with httpx.AsyncClient(base_url=base, headers=admin_headers()) as c:
        await c.patch("/api/v1/filaments/s", json={"color": "blue"})
    counts = await asyncio.gather(*readers)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    per_client = statistics.mean(counts)
    p50, p95 = statistics.median(delays) * 1000, statistics.quantiles(delays, n=20)[-1] * 1000
    print(f"stream: {clients} client(s), {orders} orders of 100 jobs in {elapsed:.1f} s: "
          f"{per_client / elapsed:,.0f} events/s per client; server CPU {cpu:.1f} s "
          f"({cpu / max(per_client * clients, 1) * 10_000:.2f} s per 10,000 events streamed, "
          f"writes included); submit-to-client delay p50 {p50:.0f} ms, p95 {p95:.0f} ms")


def hook_phase(node_client: httpx.Client, count: int) -> None:
    with webhook_receiver() as receiver:
        arrivals: dict[str, float] = {}
        hook = node_client.post("/webhooks", json={"url": receiver.url,
                                                   "types": ["job.created"]}).json()
        sent: dict[str, float] = {}
        for n in range(count):
            job_id = f"h{n}"
            response = node_client.post("/print_jobs", json={
                "id": job_id, "filament_id": "s", "filepath": "a.gcode",
                "print_weight_in_grams": 1})
            assert response.status_code == 201, response.text
            sent[job_id] = time.time()
            deadline = time.monotonic() + 10
            while job_id not in arrivals and time.monotonic() < deadline:
                if any(b["data"]["id"] == job_id for b in receiver.bodies()[-3:]):
                    arrivals[job_id] = time.time()  # polled every 1 ms
                else:
                    time.sleep(0.001)
        delays = sorted(arrivals[j] - sent[j] for j in sent if j in arrivals)
        print(f"webhooks: {len(delays)}/{count} delivered; POST answered -> receiver "
              f"p50 {statistics.median(delays) * 1000:.1f} ms, "
              f"p95 {statistics.quantiles(delays, n=20)[-1] * 1000:.1f} ms, "
              f"max {delays[-1] * 1000:.1f} ms (hook {hook['id']})")


async def synthetic(seconds: float, clients: int) -> None:
    import subprocess
    import threading

    from mes.state.context import ChangeEvent
    from mes.state.machine import Outcome
    from tests.auth import ADMIN_TOKEN
    from tests.farm_helpers import farm_settings
    from tests.live_server import serving

    os.environ.update(MES_ADMIN_TOKEN=ADMIN_TOKEN, OPCUA_ENABLED="false")
    with tempfile.TemporaryDirectory() as tmp:
        from mes.node import FarmNode

        node = FarmNode(farm_settings(Path(tmp), sse_client_queue=1_000_000,
                                      auto_schedule=False))
        try:
            async with serving(node) as url:
                async with httpx.AsyncClient(base_url=url, headers=admin_headers()) as c:
                    for _ in range(200):
                        if (await c.get("/api/v1/users/me")).status_code == 200:
                            break
                        await asyncio.sleep(0.05)
                token = admin_headers()["Authorization"]
                curls = [subprocess.Popen(
                    f"curl -sN -H 'Authorization: {token}' '{url}/api/v1/events'"
                    " | grep -c '^event: change'",
                    shell=True, stdout=subprocess.PIPE) for _ in range(clients)]
                await asyncio.sleep(1.0)
                stop = threading.Event()
                fed = [0]
                jobs = [{"id": f"j{i}", "filepath": "a.gcode", "owner_id": "admin",
                         "status": "Queued"} for i in range(100)]
                value = {"id": "o", "owner_id": "admin", "jobs": jobs}
                events = tuple([ChangeEvent("print_job", f"j{i}", "created") for i in range(100)]
                               + [ChangeEvent("filament", "s", "updated")] * 100)

                def feed() -> None:
                    index = 1_000_000
                    while not stop.is_set():
                        index += 1
                        node.events.on_apply({"op": Op.ORDER_CREATE, "ts": time.time()},
                                             Outcome(value=value, events=events, index=index))
                        fed[0] += len(events)
                        time.sleep(0)  # let the loop thread run (the GIL)

                thread_cpu0 = time.process_time()
                t0 = time.monotonic()
                feeder = threading.Thread(target=feed)
                feeder.start()
                await asyncio.sleep(seconds)
                stop.set()
                feeder.join()
                fed_for = time.monotonic() - t0
                node.events.close()  # each stream ends once it has sent what it queued
                outputs = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=120)
                                                  for p in curls))
                elapsed = time.monotonic() - t0
                cpu = time.process_time() - thread_cpu0
                received = [int((out[0] or b"0").strip() or 0) for out in outputs]
                print(f"synthetic: fed {fed[0] / fed_for:,.0f} events/s for {fed_for:.1f} s; "
                      f"each of {clients} client(s) received "
                      f"{statistics.mean(received) / elapsed:,.0f} events/s "
                      f"({min(received)}..{max(received)} of {fed[0]}, all by {elapsed:.1f} s); "
                      f"server process CPU {cpu:.1f} s")
        finally:
            node.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--hooks", type=int, default=50)
    parser.add_argument("--synthetic", action="store_true")
    options = parser.parse_args()
    if options.synthetic:
        asyncio.run(synthetic(options.seconds, options.clients))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(1, Path(tmp), AUTO_SCHEDULE="false", RAFT_SNAPSHOT_ENTRIES="100000")
        try:
            cluster.start()
            node = cluster.nodes[0]
            assert node.process is not None
            base = f"http://127.0.0.1:{node.http_port}"
            asyncio.run(stream_phase(base, node.process.pid, options.seconds, options.clients))
            hook_phase(node.client, options.hooks)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
