"""Client CPU per printer poll (GET /api/printer + GET /api/job) for several HTTP stacks.

Starts one `mock-printer --api OctoPrint --count N`, then, for each option in a process of
its own, polls every printer once per round (all at once, as the workers' ticks do) and
reports that process's CPU time per poll; the emulator's CPU is not counted. The first
round (connections being made) is left out.

    .venv/bin/python bench/poll_cost.py [--printers 100] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADERS = {"X-Api-Key": "mockkey"}
Poll = Callable[[str], Awaitable[Any]]


async def _httpx_groups(urls: list[str], rounds: int) -> float:
    """What mes did before: httpx clients shared by groups of 5 printers."""
    import httpx

    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=10,
                                                     max_keepalive_connections=10),
                                 timeout=httpx.Timeout(5.0, connect=2.0))
               for _ in range(0, len(urls), 5)]

    async def poll(i: int) -> Any:
        client = clients[i // 5]
        printer = (await client.get(urls[i] + "/api/printer", headers=HEADERS)).json()
        job = (await client.get(urls[i] + "/api/job", headers=HEADERS)).json()
        return printer, job

    try:
        return await _measure(poll, len(urls), rounds)
    finally:
        for client in clients:
            await client.aclose()


async def _httpx_aiohttp(urls: list[str], rounds: int) -> float:
    """httpx's API over the httpx-aiohttp transport, one client for every printer."""
    import httpx
    from httpx_aiohttp import AiohttpTransport

    client = httpx.AsyncClient(transport=AiohttpTransport(),
                               timeout=httpx.Timeout(5.0, connect=2.0))

    async def poll(i: int) -> Any:
        printer = (await client.get(urls[i] + "/api/printer", headers=HEADERS)).json()
        job = (await client.get(urls[i] + "/api/job", headers=HEADERS)).json()
        return printer, job

    try:
        return await _measure(poll, len(urls), rounds)
    finally:
        await client.aclose()


async def _aiohttp(urls: list[str], rounds: int) -> float:
    """One aiohttp ClientSession for every printer."""
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=5, connect=2))

    async def poll(i: int) -> Any:
        async with session.get(urls[i] + "/api/printer", headers=HEADERS) as response:
            printer = await response.json()
        async with session.get(urls[i] + "/api/job", headers=HEADERS) as response:
            job = await response.json()
        return printer, job

    try:
        return await _measure(poll, len(urls), rounds)
    finally:
        await session.close()


async def _mes_client(urls: list[str], rounds: int) -> float:
    """mes's own OctoPrintClient.status() as the workers call it (a job expected, so both
    requests), over the pool's shared session (PRINTER_NETWORKS guard on), PrinterStatus
    built."""
    from mes.networks import parse_networks
    from mes.printers.http import SharedSession
    from mes.printers.octoprint import OctoPrintClient

    shared = SharedSession(parse_networks("127.0.0.0/8"))
    clients = [OctoPrintClient(url, "mockkey", session=shared.get()) for url in urls]

    async def poll(i: int) -> Any:
        return await clients[i].status(expect_job=True)

    try:
        return await _measure(poll, len(urls), rounds)
    finally:
        for client in clients:
            await client.aclose()
        await shared.aclose()


async def _measure(poll: Callable[[int], Awaitable[Any]], count: int, rounds: int) -> float:
    """CPU seconds of this process per poll, over `rounds` rounds after a warm-up round."""
    await asyncio.gather(*(poll(i) for i in range(count)))
    cpu = time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(poll(i) for i in range(count)))
    return (time.process_time() - cpu) / (count * rounds)


OPTIONS: dict[str, Callable[[list[str], int], Awaitable[float]]] = {
    "httpx, groups of 5 clients (old mes)": _httpx_groups,
    "httpx over httpx-aiohttp, one client": _httpx_aiohttp,
    "aiohttp, one ClientSession": _aiohttp,
    "mes OctoPrintClient.status() (now)": _mes_client,
}


def child(option: str, loop: str, urls: list[str], rounds: int) -> None:
    """Measure one option in this process and print the result as JSON."""
    run = OPTIONS[option](urls, rounds)
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            seconds = runner.run(run)
    else:
        seconds = asyncio.run(run)
    print(json.dumps({"cpu_ms": seconds * 1000}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--printers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--child", nargs=2, metavar=("OPTION", "LOOP"), help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], json.loads(args.urls), args.rounds)
        return

    import httpx

    from tests.emulators import free_ports
    from tests.polling import wait_for

    port = free_ports(args.printers)
    emulator = subprocess.Popen(
        [sys.executable, "-m", "mes.emulator.cli", "--api", "OctoPrint", "--port", str(port),
         "--count", str(args.printers)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    urls = [f"http://127.0.0.1:{port + i}" for i in range(args.printers)]
    try:
        wait_for(lambda: httpx.get(urls[-1] + "/emulator/status", timeout=1).status_code == 200,
                 60, "the emulator")
        print(f"client CPU per poll (GET /api/printer + GET /api/job, JSON parsed), "
              f"{args.printers} emulated OctoPrint printers polled together, {args.rounds} "
              "rounds; the emulator runs in its own process and is not counted; "
              "a shared 2-core machine\n")
        print(f"{'option':<40} {'asyncio':>9} {'uvloop':>9}")
        for option in OPTIONS:
            row = []
            for loop in ("asyncio", "uvloop"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", option, loop, "--urls",
                     json.dumps(urls), "--rounds", str(args.rounds)],
                    capture_output=True, text=True, check=True, timeout=600)
                row.append(json.loads(out.stdout.strip().splitlines()[-1])["cpu_ms"])
            print(f"{option:<40} {row[0]:>7.2f}ms {row[1]:>7.2f}ms", flush=True)
    finally:
        emulator.terminate()
        emulator.wait(20)


if __name__ == "__main__":
    main()
