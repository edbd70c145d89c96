"""Polling against Moonraker's websocket: what each costs our node per printer.

Against the real Moonraker 0.11.0 with a Klipper host (tests/real_moonraker.py; install it
with .ci/install-moonraker), while Klipper prints a long file:

- poll: `MoonrakerClient.status()` (one objects query) in a loop; this process's CPU per
  poll;
- push: one websocket subscribed (`printer.objects.subscribe`) to the same six objects;
  the notifications per second Moonraker sends and this process's CPU per notification
  (receive, JSON, merge into the last status).

A node polls each printer once a second, so polling costs `CPU per poll` per printer-second;
the websocket costs `notifications per second x CPU per notification`, plus a connection
per printer held open. Batch-mode Klipper prints in virtual time, faster than a real
printer, so the rate is shown beside the bound a real Klipper keeps (Moonraker batches
status at most every 250 ms: 4 a second).

    .venv/bin/python bench/moonraker_push.py [--polls 300] [--window 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mes.printers.moonraker import MoonrakerClient  # noqa: E402
from tests.real_moonraker import MoonrakerServer, moonraker_binaries, write_gcode  # noqa: E402

OBJECTS = {name: None for name in ("webhooks", "print_stats", "virtual_sdcard", "extruder",
                                   "heater_bed", "display_status")}
REAL_RATE = 4.0  # notifications a second at most from a real Klipper (250 ms batches)


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for name, fields in update.items():
        if isinstance(fields, dict):
            into.setdefault(name, {}).update(fields)


async def poll_cost(url: str, polls: int) -> float:
    """CPU seconds of this process per status poll."""
    client = MoonrakerClient(url)
    try:
        await client.status()  # connection made
        cpu = time.process_time()
        for _ in range(polls):
            await client.status()
        return (time.process_time() - cpu) / polls
    finally:
        await client.aclose()


async def push_cost(url: str, window: float) -> tuple[float, float]:
    """(status notifications a second, CPU seconds per status notification) over `window`
    seconds; the CPU includes every other message the socket carries (Moonraker's process
    statistics each second, G-code responses), which a subscriber pays for as well."""
    ws_url = url.replace("http://", "ws://") + "/websocket"
    status: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 1,
                                      "method": "printer.objects.subscribe",
                                      "params": {"objects": OBJECTS}}))
        count, cpu, start = 0, time.process_time(), time.monotonic()
        while time.monotonic() - start < window:
            try:
                message = await ws.receive(timeout=window)
            except TimeoutError:
                break
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)  # every message costs, status or not
            if "result" in data:
                _merge(status, data["result"].get("status", {}))
            elif data.get("method") == "notify_status_update":
                _merge(status, data["params"][0])
                count += 1
        elapsed = time.monotonic() - start
        used = time.process_time() - cpu
    return count / elapsed, (used / count if count else 0.0)


async def measure(server: MoonrakerServer, polls: int, window: float,
                  gcodes: Path) -> dict[str, float]:
    idle_rate, idle_cost = await push_cost(server.base_url, window)
    long_print = write_gcode(gcodes / "long.gcode", 200_000).read_bytes()
    server.upload("long.gcode", long_print)
    server.start_print("long.gcode").raise_for_status()
    server.wait_print_state("printing")
    poll = await poll_cost(server.base_url, polls)
    rate, per_message = await push_cost(server.base_url, window)
    server.client.post("/printer/print/cancel")
    return {"poll": poll, "rate": rate, "per_message": per_message, "idle_rate": idle_rate,
            "idle_cost": idle_cost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args()
    if moonraker_binaries() is None:
        sys.exit("Moonraker is not installed: run .ci/install-moonraker")
    with tempfile.TemporaryDirectory() as tmp:
        server = MoonrakerServer(Path(tmp) / "moonraker")
        server.start()
        try:
            r = asyncio.run(measure(server, args.polls, args.window, Path(tmp)))
        finally:
            server.stop()
    poll_ms = r["poll"] * 1000
    push_ms = r["per_message"] * 1000
    print("real Moonraker 0.11.0 + Klipper (batch mode), one printer, this process's CPU\n")
    print(f"poll (one objects query):       {poll_ms:.3f} ms CPU per poll; at 1 poll/s "
          f"{poll_ms:.3f} ms per printer-second")
    print(f"websocket, printing:            {r['rate']:.1f} notifications/s (batch mode), "
          f"{push_ms:.3f} ms CPU each")
    print(f"websocket, idle:                {r['idle_rate']:.1f} notifications/s")
    print(f"websocket while printing:       {push_ms * r['rate']:.3f} ms per printer-second "
          f"at the rate measured ({push_ms * r['rate'] / poll_ms:.0%} of polling), "
          f"{push_ms * REAL_RATE:.3f} ms at a real Klipper's {REAL_RATE:g}/s "
          f"({push_ms * REAL_RATE / poll_ms:.0%})")


if __name__ == "__main__":
    main()
