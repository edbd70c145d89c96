"""What one open page's event stream costs at 1,000 printers, per view.

One node with N mock printers, every one printing a long job (progress moves every tick),
and event streams opened as the web page opens them for each view, read in parallel for a
while: bytes on the wire (gzip, as a browser asks) and of text, and events per second, for
the whole farm's telemetry (what every tab received before streams were per view), the
printers tab (the 60 printers of its first page in full, the others' state changes for the
overview; also without gzip, the baseline), and a tab that shows no printer.

    .venv/bin/python bench/event_views.py [--printers 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.auth import admin_headers  # noqa: E402
from tests.cluster import ServerProcess  # noqa: E402
from tests.farm_helpers import GCODE  # noqa: E402
from tests.polling import wait_for  # noqa: E402

PAGE = 60


def populate(node: ServerProcess, printers: int) -> None:
    api = node.client
    api.post("/filaments", json={"id": "pla", "type": "PLA", "color": "grey",
                                 "total_weight_in_grams": 100_000}).raise_for_status()
    for n in range(printers):
        api.post("/printers", json={"id": f"p{n:04d}", "api": "Mock",
                                    "url": f"http://mock-{n}:5000",
                                    "filament_id": "pla"}).raise_for_status()
    stored = api.post("/files", files={"file": ("long.gcode", GCODE)})
    stored.raise_for_status()
    for n in range(printers):
        api.post("/print_jobs", json={"printer_id": f"p{n:04d}", "filament_id": "pla",
                                      "file_id": stored.json()["id"],
                                      "print_weight_in_grams": 1}).raise_for_status()

    def printing() -> bool:
        page = api.get("/dashboard/overview").json()
        return bool(page["states"]["printing"] >= printers * 0.95)

    wait_for(printing, 600, "the printers to print")


def measure(node: ServerProcess, name: str, params: list[tuple[str, str]], seconds: float,
            out: dict[str, tuple[int, int, int]]) -> None:
    """Text bytes, events and bytes on the wire of one stream read for `seconds`; a view
    named "... uncompressed" asks for no gzip (as a client without it)."""
    base = f"http://127.0.0.1:{node.http_port}/api/v1/events"
    received, events = 0, 0
    encoding = "identity" if name.endswith("uncompressed") else "gzip"
    with httpx.Client(headers={**admin_headers(), "Accept-Encoding": encoding},
                      timeout=httpx.Timeout(10.0, read=60.0)) as c, \
            c.stream("GET", base, params=params) as stream:
        started = time.monotonic()
        for line in stream.iter_lines():
            received += len(line) + 1
            events += line.startswith("event:")
            if time.monotonic() - started >= seconds:
                break
        wire = stream.num_bytes_downloaded
    out[name] = (received, events, wire)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = ServerProcess(0, Path(tmp), {"MOCK_PRINTER_JOB_TIME": "100000",
                                            "MOCK_PRINTER_INTERVAL": "1"})
        node.start()
        try:
            wait_for(node.healthy, 60, "the node to be ready")
            started = time.perf_counter()
            populate(node, args.printers)
            print(f"{args.printers} mock printers printing after "
                  f"{time.perf_counter() - started:.0f} s")
            shown = [("printer", f"p{n:04d}") for n in range(min(PAGE, args.printers))]
            tab = [*shown, ("states", "true")]
            views = {"every printer's telemetry (before)": [],
                     f"printers tab: {PAGE} shown + state changes": tab,
                     f"printers tab: {PAGE} shown + state changes, uncompressed": tab,
                     "a tab without printers": [("telemetry", "false")]}
            out: dict[str, tuple[int, int, int]] = {}
            threads = [threading.Thread(target=measure, args=(node, name, params,
                                                              args.seconds, out))
                       for name, params in views.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for name in views:
                received, events, wire = out[name]
                print(f"{name}: {wire / args.seconds / 1024:.2f} KiB/s on the wire "
                      f"({received / args.seconds / 1024:.2f} KiB/s of text), "
                      f"{events / args.seconds:.1f} events/s")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
