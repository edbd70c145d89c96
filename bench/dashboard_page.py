"""The web page at 1,000 printers: one node with N mock printers (idle, each with a status row
and a spool), then Debian's Chromium (Playwright) signs in and loads the printer grid.

Prints the server's answer time for /api/v1/dashboard/printers at several page sizes (and
filtered by attention or by a search) and for /api/v1/dashboard/overview, the
page's time from navigation to a rendered grid (first page, every page size), the time to
step through every page, and the server process's CPU seconds for all of it.

    .venv/bin/python bench/dashboard_page.py [--printers 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.cluster import ServerProcess  # noqa: E402
from tests.polling import wait_for  # noqa: E402

PASSWORD = "bench-password-1"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def populate(node: ServerProcess, printers: int) -> None:
    api = node.client
    for n in range(20):
        api.post("/filaments", json={"id": f"spool-{n:02d}", "type": "PLA", "color": "grey",
                                     "total_weight_in_grams": 1000}).raise_for_status()
    for n in range(printers):
        api.post("/printers", json={
            "id": f"p{n:04d}", "api": "Mock", "url": f"http://mock-{n}:5000",
            "group": f"room-{n % 10}", "filament_id": f"spool-{n % 20:02d}"}).raise_for_status()
    api.post("/users", json={"name": "op", "role": "operator",
                             "password": PASSWORD}).raise_for_status()

    def statuses() -> bool:
        page = api.get("/dashboard/printers", params={"limit": 1000, "state": "unknown"})
        return page.json() == []

    wait_for(statuses, 300, "every mock printer to report a status")


def api_timings(node: ServerProcess) -> None:
    reads: list[tuple[str, dict[str, str | int]]] = [
        ("/dashboard/printers", {"limit": limit}) for limit in (60, 240, 1000)]
    reads += [("/dashboard/printers", {"limit": 60, "state": "attention"}),
              ("/dashboard/printers", {"limit": 60, "q": "p099"}),
              ("/dashboard/overview", {})]
    for path, params in reads:
        times = []
        size = 0
        for _ in range(10):
            started = time.perf_counter()
            answer = node.client.get(path, params=params)
            answer.raise_for_status()
            times.append(time.perf_counter() - started)
            size = len(answer.content)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        print(f"GET {path}{'?' + query if query else ''}: median "
              f"{statistics.median(times)*1000:.0f} ms, max {max(times)*1000:.0f} ms "
              f"(10 calls, {size} bytes)")


def page_timings(node: ServerProcess, printers: int) -> None:
    url = f"http://127.0.0.1:{node.http_port}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        # bypass_csp: Playwright evaluates its wait conditions as strings (the page forbids eval)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
        page.goto(url)
        page.get_by_label("User name").fill("op")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.locator(".card").first.wait_for()
        for limit in ("60", "240"):
            times = []
            for _ in range(5):
                started = time.perf_counter()
                page.reload()
                page.locator("#printer-filter select[name=limit]").select_option(limit)
                page.wait_for_function(
                    f"document.querySelectorAll('.card').length === {min(int(limit), printers)}")
                times.append(time.perf_counter() - started)
            print(f"page reload to a rendered grid of {limit} cards: median "
                  f"{statistics.median(times)*1000:.0f} ms")
        started = time.perf_counter()
        pages = 1
        while page.locator('.pager[data-for="printers"] [data-page="next"]').is_enabled():
            first = page.locator(".card").first.get_attribute("data-id")
            page.locator('.pager[data-for="printers"] [data-page="next"]').click()
            page.wait_for_function(
                f"document.querySelector('.card') && "
                f"document.querySelector('.card').dataset.id !== '{first}'")
            pages += 1
        print(f"stepping through {pages} pages of 240: {time.perf_counter() - started:.2f} s")
        metrics = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
        print(f"navigation: DOMContentLoaded {metrics['domContentLoadedEventEnd']:.0f} ms, "
              f"load {metrics['loadEventEnd']:.0f} ms, transfer {metrics['transferSize']} B")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--printers", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = ServerProcess(0, Path(tmp), {"MOCK_PRINTER_JOB_TIME": "30"})
        node.start()
        try:
            wait_for(node.healthy, 30, "the node to be ready")
            started = time.perf_counter()
            populate(node, args.printers)
            print(f"{args.printers} mock printers created and reporting in "
                  f"{time.perf_counter() - started:.1f} s")
            assert node.process is not None
            cpu = cpu_seconds(node.process.pid)
            api_timings(node)
            page_timings(node, args.printers)
            print(f"server CPU for the reads and pages above: "
                  f"{cpu_seconds(node.process.pid) - cpu:.2f} s (includes its idle workers)")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
