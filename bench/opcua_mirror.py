"""The embedded OPC UA server under a farm's load: N printers whose values change every
second, one and then two subscribers (separate processes, Basic256Sha256 SignAndEncrypt, a
farm account) to all their variables. Reports commit-to-notification delay p50/p99 (from
the telemetry command's commit to a client receiving its Progress value; also the commit
time itself and when the mirror finished writing each tick), notifications per
second per client, whether each client got every latest value, and the OPC UA thread's CPU.

    .venv/bin/python bench/opcua_mirror.py [--printers 1000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from bench.opcua_build import fill, place_all, statuses, thread_cpu
from mes.auth.secrets import hash_password
from mes.config import Settings
from mes.node import FarmNode
from mes.opcua.server import EmbeddedServer
from mes.state.ops import Op
from tests.ports import free_port

FARM = "http://mes-printfarm.org/UA/PrintFarm/"
LEAVES = ("State", "NozzleTemperature", "NozzleTargetTemperature", "BedTemperature",
          "BedTargetTemperature", "CurrentJob/Progress", "CurrentJob/TimePrinted",
          "CurrentJob/TimeLeft")
PUBLISHING_MS = 500
PASSWORD = "bench-password-1"


def subscriber(url: str, folder: str, count: int, seconds: float, out: str,
               ready: Any) -> None:
    """One client process: subscribe to every printer's values, record Progress arrivals."""
    asyncio.run(_subscribe(url, Path(folder), count, seconds, Path(out), ready))


async def _subscribe(url: str, folder: Path, count: int, seconds: float, out: Path,
                     ready: Any) -> None:
    cert, key = folder / "cert.der", folder / "key.pem"
    uri = f"urn:mes:bench:{folder.name}"
    await setup_self_signed_certificate(key, cert, uri, "localhost",
                                        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": uri})
    client = Client(url, timeout=60, watchdog_intervall=30)
    client.application_uri = uri
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                              mode=ua.MessageSecurityMode.SignAndEncrypt)
    client.set_user("bench")
    client.set_password(PASSWORD)
    arrivals: list[tuple[str, float, float]] = []
    total = [0]

    class Handler:
        def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
            total[0] += 1
            ident = node.nodeid.Identifier
            if ident.endswith("/CurrentJob/Progress"):
                arrivals.append((ident.split("/")[1], float(value), time.time()))

    async with client:
        ns = (await client.get_namespace_array()).index(FARM)
        nodes = [client.get_node(ua.NodeId(f"Printers/p{i}/{leaf}", ns))
                 for i in range(count) for leaf in LEAVES]
        subscription = await client.create_subscription(PUBLISHING_MS, Handler())
        for start in range(0, len(nodes), 1000):
            await subscription.subscribe_data_change(nodes[start:start + 1000], queuesize=10)
        ready.set()
        await asyncio.sleep(seconds)
        out.write_text(json.dumps({"total": total[0], "arrivals": arrivals}))


def process_cpu() -> float:
    """CPU seconds (user + system) of this process, every thread."""
    times = os.times()
    return times.user + times.system


async def telemetry(node: FarmNode, epochs: dict[str, int], count: int, seconds: int
                    ) -> tuple[dict[float, float], dict[float, float], list[float]]:
    """Commit one telemetry command of `count` statuses a second; when each tick's Progress
    value was submitted and committed, and each commit's duration."""
    submitted: dict[float, float] = {}
    committed: dict[float, float] = {}
    commits: list[float] = []
    wall0 = time.perf_counter()
    for tick in range(1, seconds + 1):
        value = float(tick % 100)
        submitted[value] = time.time()
        outcome = await node.writer.submit(Op.PRINTER_TELEMETRY, {
            "statuses": statuses(count, tick, epochs)})
        assert outcome.ok, outcome.error
        committed[value] = time.time()
        commits.append(committed[value] - submitted[value])
        await asyncio.sleep(max(0.0, wall0 + tick - time.perf_counter()))
    return submitted, committed, commits


def watch_writes(server: EmbeddedServer, count: int) -> dict[float, float]:
    """When each tick's Progress of the last printer was written into the address space (its
    value -> time.time()); the mirror writes a pass's values in one `write` call."""
    space = server.space
    assert space is not None
    seen: dict[float, float] = {}
    last = space.id(f"Printers/p{count - 1}/CurrentJob/Progress")
    original = space.write

    async def write(changes: list[tuple[ua.NodeId, ua.Variant]]) -> None:
        await original(changes)
        shown = space._values.get(last)
        if shown is not None and shown[1] not in seen:
            seen[shown[1]] = time.time()

    space.write = write  # type: ignore[method-assign]
    return seen


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


async def run(node: FarmNode, server: EmbeddedServer, count: int, seconds: int,
              clients: int, tmp: Path) -> None:
    context = multiprocessing.get_context("spawn")
    readies, processes, outs = [], [], []
    for index in range(clients):
        folder = tmp / f"client{clients}-{index}"
        folder.mkdir()
        ready = context.Event()
        out = folder / "result.json"
        process = context.Process(target=subscriber, args=(
            node.settings.opcua_endpoint, str(folder), count, seconds + 6.0, str(out), ready))
        process.start()
        readies.append(ready)
        processes.append(process)
        outs.append(out)
    for ready in readies:
        await asyncio.to_thread(ready.wait, 180)
    await asyncio.sleep(2)  # the initial values are delivered
    epochs = await place_all(node)
    assert server._thread is not None and server._thread.native_id is not None
    mirrored = watch_writes(server, count)
    cpu0, wall0 = thread_cpu(server._thread.native_id), time.perf_counter()
    process0 = process_cpu()
    _, committed, commits = await telemetry(node, epochs, count, seconds)
    wall = time.perf_counter() - wall0
    share = (thread_cpu(server._thread.native_id) - cpu0) / wall
    node_share = (process_cpu() - process0) / wall
    for process in processes:
        await asyncio.to_thread(process.join, 120)
    last = float(seconds % 100)
    written = [at - committed[value] for value, at in mirrored.items() if value in committed]
    print(f"  committed (1 telemetry command of {count} statuses): p50 "
          f"{percentile(commits, 0.5) * 1000:.0f} ms, p99 {percentile(commits, 0.99) * 1000:.0f} "
          f"ms; written into the address space (every printer): p50 "
          f"{percentile(written, 0.5) * 1000:.0f} ms, p99 {percentile(written, 0.99) * 1000:.0f} "
          "ms after committing")
    for index, out in enumerate(outs):
        data = json.loads(out.read_text())
        delays = [at - committed[value] for _, value, at in data["arrivals"]
                  if value in committed]
        latest: dict[str, float] = {}
        for printer, value, _ in data["arrivals"]:
            latest[printer] = value
        got_last = sum(1 for v in latest.values() if v == last)
        print(f"  client {index + 1}/{clients}: {data['total'] / (seconds + 6):.0f} "
              f"notifications/s; commit-to-notification p50 {percentile(delays, 0.5) * 1000:.0f} "
              f"ms, p99 {percentile(delays, 0.99) * 1000:.0f} ms (publishing every "
              f"{PUBLISHING_MS} ms); latest value delivered for {got_last}/{count} printers")
    print(f"  OPC UA thread: {share * 100:.1f}% of a core with {clients} subscriber(s); the "
          f"whole node: {node_share * 100:.1f}%")


async def main(count: int, seconds: int, client_counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        settings = Settings(_env_file=None, data_dir=tmp / "data",  # type: ignore[call-arg]
                            upload_path=tmp / "upload", raft_self=f"127.0.0.1:{free_port()}",
                            opcua_endpoint=f"opc.tcp://127.0.0.1:{free_port()}/mes/")
        node = FarmNode(settings)
        try:
            while not node.raft.is_leader():
                await asyncio.sleep(0.05)
            await fill(node, count)
            epochs = await place_all(node)
            for start in range(0, count, 100):  # a print on every printer: progress shows
                await asyncio.gather(*(node.writer.submit(Op.JOB_EXTERNAL, {
                    "epoch": epochs[f"p{i}"], "job_id": f"x{i}", "printer_id": f"p{i}",
                    "file_name": "part.gcode"}) for i in range(start, min(start + 100, count))))
            await node.writer.submit(Op.USER_CREATE, {
                "id": "bench", "name": "bench", "role": "operator",
                "password_hash": hash_password(PASSWORD)})
            # The same load without OPC UA: what the node spends on the farm itself.
            baseline = await place_all(node)
            started, cpu0 = time.perf_counter(), process_cpu()
            await telemetry(node, baseline, count, seconds)
            alone = (process_cpu() - cpu0) / (time.perf_counter() - started)
            print(f"without OPC UA the node spends {alone * 100:.1f}% of a core on the same "
                  "telemetry")
            server = EmbeddedServer(node)
            await server.start()
            while not server.ready.is_set():
                await asyncio.sleep(0.1)
            print(f"{count} printers: farm built in {server.build_seconds:.2f} s "
                  f"({server.space.node_count if server.space else 0} nodes)")
            for clients in client_counts:
                print(f"{clients} subscriber(s), {count * len(LEAVES)} monitored items each, "
                      f"values changing every second for {seconds} s:")
                await run(node, server, count, seconds, clients, tmp)
            await server.stop()
        finally:
            node.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2])
    options = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(options.printers, options.seconds, options.clients))
