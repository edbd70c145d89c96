"""The web page's main thread at 1,000 printing printers (issue 24): first paint, overview,
and the renderer's busy share while every print ends at once.

One node with N mock printers (MOCK_PRINTER_INTERVAL=1, so a print takes 3 s of heating
plus --job-time s), every one printing a job pinned to it, submitted as orders of 100: the
prints start as fast as the node claims and starts them (1,000 in about 30 s on a 2-core
machine), so they end over about as long, 30 completions a second. Debian's Chromium
(Playwright, headless, 1400x900) signs in as an operator (the jobs are the admin's), then:

1. First paint and overview: a new page (a signed-in context) navigates to the page; the
   figures are the Performance API's first-contentful-paint and the moment (performance.now,
   from navigation start) when `#overview-counts` has children and `#overview-total` text.
   3 times with an empty HTTP cache (a fresh context), then --runs times warm (median, max).
2. Busy share: the renderer main thread's task time (CDP `Performance.getMetrics`,
   TaskDuration) over a window divided by the window's wall time (the metrics' Timestamp),
   with a PerformanceObserver for 'longtask' counting the tasks over 50 ms. On the Printers
   tab (overview, tiles and 60 cards shown): --steady s while the farm prints steadily (the
   baseline), then the wave: from just before the first print ends until every one has ended
   and --settle s more for the page's coalesced refreshes. Then the beds are cleared, every
   printer prints again and the same on the Jobs tab (steady, then its wave). Both busy
   shares are wall time: on a 2-core machine the server (up to ~80 % of a core in a wave)
   competes with the renderer, so the main thread's CPU time is printed beside them.

Also printed: the server process's CPU share in each window, how many prints ended inside
each wave window, the page's live mode, console errors, and whether the page shows the
farm's final state after a wave. --trace FILE records a Chromium trace of the Printers
tab's wave (where its time goes: style, layout, paint, script), at some cost to the figures.

    .venv/bin/python bench/page_main_thread.py [--printers 1000] [--job-time 90] [--trace FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    CDPSession,
    Page,
    Request,
    sync_playwright,
)

from tests.cluster import ServerProcess  # noqa: E402
from tests.farm_helpers import GCODE  # noqa: E402
from tests.polling import wait_for  # noqa: E402

PASSWORD = "bench-password-1"
ORDER_JOBS = 100  # jobs per order (the API's most)
HEAT_SECONDS = 3.0  # the mock heats for 3 intervals of MOCK_PRINTER_INTERVAL=1 s
COLD_RUNS = 3  # navigations with an empty HTTP cache

# Before the page's own scripts: long tasks, and when the overview's counts are first shown.
INIT_SCRIPT = """
(() => {
  const bench = { longTasks: [], overviewAt: null };
  window.__bench = bench;
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) bench.longTasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (_) { bench.noLongTasks = true; }
  const shown = () => {
    const counts = document.getElementById("overview-counts");
    const total = document.getElementById("overview-total");
    return counts && total && counts.children.length > 0 && total.textContent.trim() !== "";
  };
  const watch = new MutationObserver(() => {
    if (bench.overviewAt === null && shown()) {
      bench.overviewAt = performance.now();
      watch.disconnect();
    }
  });
  watch.observe(document, { childList: true, subtree: true, characterData: true });
})();
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def epoch(value: Any) -> float:
    """An API timestamp (ISO 8601 with its offset) as seconds since the epoch."""
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- the farm


def populate(node: ServerProcess, printers: int) -> str:
    """N idle mock printers reporting, a spool in each, the operator; the G-code's file id."""
    api = node.client
    api.post("/filaments", json={"id": "pla", "type": "PLA", "color": "grey",
                                 "total_weight_in_grams": 100_000}).raise_for_status()
    for n in range(printers):
        api.post("/printers", json={"id": f"p{n:04d}", "api": "Mock",
                                    "url": f"http://mock-{n}:5000", "group": f"room-{n % 10}",
                                    "filament_id": "pla"}).raise_for_status()
    api.post("/users", json={"name": "op", "role": "operator",
                             "password": PASSWORD}).raise_for_status()
    stored = api.post("/files", files={"file": ("part.gcode", GCODE)})
    stored.raise_for_status()

    def reporting() -> bool:
        page = api.get("/dashboard/printers", params={"limit": 1000, "state": "unknown"})
        return bool(page.json() == [])

    wait_for(reporting, 300, "every mock printer to report a status", interval=1.0)
    return str(stored.json()["id"])


def states(node: ServerProcess) -> dict[str, int]:
    answer = node.client.get("/dashboard/overview", timeout=30.0)
    answer.raise_for_status()
    return dict(answer.json()["states"])


def print_everywhere(node: ServerProcess, printers: int,
                     file_id: str) -> tuple[float, float, set[str]]:
    """One job pinned to each printer, in orders of 100; wait until all print. The earliest
    and latest moment (epoch s) a job was claimed, and the jobs' ids."""
    for first in range(0, printers, ORDER_JOBS):
        body = {"name": f"wave {first}", "jobs": [
            {"printer_id": f"p{n:04d}", "filament_id": "pla", "file_id": file_id,
             "print_weight_in_grams": 1} for n in range(first, min(first + ORDER_JOBS, printers))]}
        node.client.post("/orders", json=body, timeout=60.0).raise_for_status()
    wait_for(lambda: states(node).get("printing", 0) >= printers, 300,
             "every printer to print", interval=1.0)
    running = jobs(node, "Running")
    claimed = [epoch(job["claimed_at"]) for job in running if job.get("claimed_at")]
    return min(claimed), max(claimed), {str(job["id"]) for job in running}


def jobs(node: ServerProcess, status: str) -> list[dict[str, Any]]:
    """Every job of this status, page by page."""
    rows: list[dict[str, Any]] = []
    params = {"status": status, "limit": "1000"}
    while True:
        answer = node.client.get("/print_jobs", params=params, timeout=60.0)
        answer.raise_for_status()
        rows.extend(answer.json())
        cursor = answer.headers.get("X-Next-Cursor")
        if not cursor:
            return rows
        params["cursor"] = cursor


def clear_beds(node: ServerProcess, printers: int, threads: int = 4) -> None:
    """Every printer's bed marked clear (the operator took the prints off)."""
    ids = iter(range(printers))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                n = next(ids, None)
            if n is None:
                return
            node.client.post(f"/printers/p{n:04d}/bed_cleared", timeout=60.0).raise_for_status()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def wave_ends(node: ServerProcess, ids: set[str], window: Window) -> str:
    """How many of the wave's jobs (`ids`) ended Done inside the window, and over how long."""
    ends = [epoch(job["ended"]["at"]) for job in jobs(node, "Done")
            if job["id"] in ids and (job.get("ended") or {}).get("at")]
    inside = sum(window.wall_start <= t <= window.wall_end for t in ends)
    spread = max(ends) - min(ends) if ends else 0.0
    return (f"  prints ended inside the window: {inside} of {len(ids)} "
            f"({len(ends)} ended Done, over {spread:.1f} s)")


# ---------------------------------------------------------------- the page


@dataclass
class Window:
    """What the renderer did over one measuring window."""

    seconds: float
    busy: float  # TaskDuration / wall time
    script: float  # ScriptDuration / wall time
    layout: float  # (LayoutDuration + RecalcStyleDuration) / wall time
    thread_cpu: float  # ThreadTime (the main thread's CPU time) / wall time
    process_cpu: float  # ProcessTime (the renderer process's CPU time) / wall time
    long_tasks: int
    longest_ms: float
    long_ms: float  # summed duration of the long tasks
    server_cpu: float  # the server process's CPU seconds per wall second
    wall_start: float  # epoch s
    wall_end: float
    requests: dict[str, int]  # the page's requests in the window, by path

    def line(self, name: str) -> str:
        asked = sorted(self.requests.items(), key=lambda kv: -kv[1])
        return (f"{name}: main thread busy {100 * self.busy:.1f} % of {self.seconds:.1f} s "
                f"(script {100 * self.script:.1f} %, style+layout {100 * self.layout:.1f} %; "
                f"its CPU {100 * self.thread_cpu:.1f} %, renderer process CPU "
                f"{100 * self.process_cpu:.1f} %); {self.long_tasks} long tasks, longest "
                f"{self.longest_ms:.0f} ms, {self.long_ms:.0f} ms in all; server CPU "
                f"{100 * self.server_cpu:.0f} % of a core\n"
                f"  page requests: {sum(self.requests.values())} ("
                + ", ".join(f"{path} {n}" for path, n in asked[:6]) + ")")


def shape(url: str) -> str:
    """A URL's path with long ids as *: what kind of request it was."""
    return "/".join("*" if len(part) > 24 else part for part in urlsplit(url).path.split("/"))


def metrics(cdp: CDPSession) -> dict[str, float]:
    answer = cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in answer["metrics"]}


class Meter:
    """Opens a measuring window on a page and closes it."""

    def __init__(self, page: Page, node: ServerProcess) -> None:
        self.page = page
        self.node = node
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Performance.enable")
        assert node.process is not None
        self.pid = node.process.pid
        self._start: tuple[dict[str, float], float, float, float] | None = None
        self.requests: dict[str, int] = {}
        page.on("request", self._request)

    def _request(self, request: Request) -> None:
        path = shape(request.url)
        self.requests[path] = self.requests.get(path, 0) + 1

    def begin(self) -> None:
        page_now = float(self.page.evaluate("performance.now()"))
        self.requests = {}
        self._start = (metrics(self.cdp), page_now, cpu_seconds(self.pid), time.time())

    def end(self) -> Window:
        assert self._start is not None
        m1 = metrics(self.cdp)
        page_now = float(self.page.evaluate("performance.now()"))
        cpu1, wall1 = cpu_seconds(self.pid), time.time()
        m0, page_then, cpu0, wall0 = self._start
        wall = m1["Timestamp"] - m0["Timestamp"]

        def share(*names: str) -> float:
            return sum(m1.get(n, 0.0) - m0.get(n, 0.0) for n in names) / wall

        tasks: list[list[float]] = self.page.evaluate(
            "([a, b]) => window.__bench.longTasks.filter(([s]) => s >= a && s <= b)",
            [page_then, page_now])
        durations = [d for _, d in tasks]
        return Window(seconds=wall, busy=share("TaskDuration"), script=share("ScriptDuration"),
                      layout=share("LayoutDuration", "RecalcStyleDuration"),
                      thread_cpu=share("ThreadTime"), process_cpu=share("ProcessTime"),
                      long_tasks=len(durations), longest_ms=max(durations, default=0.0),
                      long_ms=sum(durations), server_cpu=(cpu1 - cpu0) / (wall1 - wall0),
                      wall_start=wall0, wall_end=wall1, requests=self.requests)


def new_context(browser: Browser, storage: Any = None) -> BrowserContext:
    # bypass_csp: Playwright evaluates its wait conditions as strings (the page forbids eval)
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True,
                                  storage_state=storage)
    context.add_init_script(INIT_SCRIPT)
    return context


def sign_in(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    page.get_by_label("User name").fill("op")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.locator(".card").first.wait_for()
    return page


def first_paint(context: BrowserContext, url: str) -> tuple[float, float]:
    """A new page navigates to the page (signed in): first contentful paint and the overview's
    counts shown, ms from navigation start."""
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_function("window.__bench && window.__bench.overviewAt !== null",
                               timeout=60_000)
        fcp, shown = page.evaluate(
            "() => [performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1,"
            " window.__bench.overviewAt]")
        return float(fcp), float(shown)
    finally:
        page.close()


def paint_timings(browser: Browser, storage: Any, url: str, runs: int,
                  warm_context: BrowserContext) -> None:
    """First paint and overview shown: in fresh contexts (empty HTTP cache, signed in by
    the same cookie), then in the signed-in context (its cache warm)."""
    cold = []
    for _ in range(COLD_RUNS):
        cold_context = new_context(browser, storage)
        try:
            cold.append(first_paint(cold_context, url))
        finally:
            cold_context.close()
    warm = [first_paint(warm_context, url) for _ in range(runs)]
    for name, results in ((f"empty cache, {COLD_RUNS} navigations", cold),
                          (f"warm cache, {runs} navigations", warm)):
        fcps, shows = [r[0] for r in results], [r[1] for r in results]
        print(f"first contentful paint, {name}: median {statistics.median(fcps):.0f} ms, "
              f"max {max(fcps):.0f} ms")
        print(f"overview counts shown, {name}: median {statistics.median(shows):.0f} ms, "
              f"max {max(shows):.0f} ms (goal: under 1000 ms)")


def page_state(page: Page) -> dict[str, Any]:
    """What the page shows now: live mode, overview total and counts, cards' states."""
    result: dict[str, Any] = page.evaluate("""() => ({
      live: document.getElementById('live').textContent,
      total: document.getElementById('overview-total').textContent,
      counts: [...document.querySelectorAll('#overview-counts button')].map(b => b.textContent),
      tiles: [...document.querySelectorAll('#tiles .tile')].reduce((acc, t) => {
        acc[t.dataset.state] = (acc[t.dataset.state] || 0) + 1; return acc; }, {}),
      cards: [...document.querySelectorAll('.card')].reduce((acc, c) => {
        acc[c.dataset.state] = (acc[c.dataset.state] || 0) + 1; return acc; }, {}),
      running: document.querySelectorAll('#running-table tbody tr[data-id]').length,
      history: [...document.querySelectorAll('#history-table tbody tr[data-id]')]
        .map(r => r.dataset.status),
    })""")
    return result


def wave(meter: Meter, node: ServerProcess, first_end: float, last_end: float,
         settle: float) -> Window:
    """Measure from 3 s before the first predicted end until every print has ended, plus
    `settle` s; at most 60 s after the last predicted end."""
    meter.page.wait_for_timeout(1000 * max(0.0, first_end - 3.0 - time.time()))
    meter.begin()
    deadline = last_end + 60.0
    while time.time() < deadline:
        if states(node).get("printing", 0) == 0:
            break
        meter.page.wait_for_timeout(1000)
    else:
        print("  (not every print ended within 60 s of the last predicted end)")
    meter.page.wait_for_timeout(1000 * settle)
    return meter.end()


# ---------------------------------------------------------------- the run


def run(node: ServerProcess, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    file_id = populate(node, args.printers)
    print(f"{args.printers} mock printers reporting after {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    first_claim, last_claim, ids = print_everywhere(node, args.printers, file_id)
    print(f"every printer printing {time.perf_counter() - started:.0f} s after the orders; "
          f"jobs claimed over {last_claim - first_claim:.1f} s")
    job_seconds = HEAT_SECONDS + args.job_time
    url = f"http://127.0.0.1:{node.http_port}/#printers"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            context = new_context(browser)
            page = sign_in(context, url)
            page.on("console", lambda m: errors.append(
                f"{m.text[:100]} ({shape(str(m.location.get('url') or ''))})")
                if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            paint_timings(browser, context.storage_state(), url, args.runs, context)
            meter = Meter(page, node)
            page.wait_for_function("document.getElementById('live').dataset.mode === 'events'")

            # The Printers tab: steady, then the wave.
            first_end, last_end = first_claim + job_seconds, last_claim + job_seconds + 2.0
            room = first_end - 5.0 - time.time()
            if room < 5.0:
                print(f"  (only {room:.0f} s before the first print ends: raise --job-time)")
            meter.begin()
            page.wait_for_timeout(1000 * max(1.0, min(args.steady, room)))
            printers_steady = meter.end()
            print(printers_steady.line("Printers tab, steady printing (baseline)"))
            if args.trace:
                browser.start_tracing(page=page, path=args.trace, screenshots=False)
            printers_wave = wave(meter, node, first_end, last_end, args.settle)
            if args.trace:
                browser.stop_tracing()
                print(f"  (traced into {args.trace}: the tracing's cost is in this window)")
            print(printers_wave.line("Printers tab, wave of completions"))
            print(wave_ends(node, ids, printers_wave))
            shown = page_state(page)
            print(f"  page after the wave: {shown['live']}; overview {shown['total']}: "
                  f"{', '.join(shown['counts'])}; tiles {shown['tiles']}; cards {shown['cards']}")

            # The Jobs tab: beds cleared, every printer printing again, steady, then the wave.
            page.get_by_role("tab", name="Jobs").click()
            started = time.perf_counter()
            clear_beds(node, args.printers)
            first_claim, last_claim, ids = print_everywhere(node, args.printers, file_id)
            print(f"beds cleared and every printer printing again in "
                  f"{time.perf_counter() - started:.0f} s; jobs claimed over "
                  f"{last_claim - first_claim:.1f} s")
            first_end, last_end = first_claim + job_seconds, last_claim + job_seconds + 2.0
            room = first_end - 5.0 - time.time()
            if room < 5.0:
                print(f"  (only {room:.0f} s before the first print ends: raise --job-time)")
            # let the submissions' refreshes pass
            page.wait_for_timeout(1000 * max(0.0, min(3.0, room - 5.0)))
            room = first_end - 5.0 - time.time()
            meter.begin()
            page.wait_for_timeout(1000 * max(1.0, min(args.steady, room)))
            jobs_steady = meter.end()
            print(jobs_steady.line("Jobs tab, steady printing (baseline)"))
            jobs_wave = wave(meter, node, first_end, last_end, args.settle)
            print(jobs_wave.line("Jobs tab, wave of completions"))
            print(wave_ends(node, ids, jobs_wave))
            shown = page_state(page)
            statuses = {s: shown["history"].count(s) for s in set(shown["history"])}
            print(f"  page after the wave: {shown['live']}; 'Printing now' rows "
                  f"{shown['running']}; history's first page {statuses}")

            print(f"busy share, Printers tab: steady {100 * printers_steady.busy:.1f} % -> "
                  f"wave {100 * printers_wave.busy:.1f} %; Jobs tab: steady "
                  f"{100 * jobs_steady.busy:.1f} % -> wave {100 * jobs_wave.busy:.1f} % "
                  f"(goal: under 10 % in the wave)")
            kinds = {e: errors.count(e) for e in sorted(set(errors))}
            print(f"console errors in the page: {len(errors)}"
                  + "".join(f"\n  {n} x {e}" for e, n in kinds.items()))
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--printers", type=int, default=1000)
    parser.add_argument("--job-time", type=int, default=90,
                        help="seconds each print takes after heating (MOCK_PRINTER_JOB_TIME)")
    parser.add_argument("--steady", type=float, default=15.0,
                        help="seconds of the steady-printing baseline window")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds the wave window goes on after the last print ended")
    parser.add_argument("--runs", type=int, default=5, help="warm navigations measured")
    parser.add_argument("--trace", metavar="FILE",
                        help="record a Chromium trace of the Printers tab's wave into FILE "
                        "(chrome://tracing or ui.perfetto.dev); it costs the page time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = ServerProcess(0, Path(tmp), {"MOCK_PRINTER_JOB_TIME": str(args.job_time),
                                            "MOCK_PRINTER_INTERVAL": "1"})
        node.start()
        try:
            wait_for(node.healthy, 60, "the node to be ready")
            run(node, args)
        finally:
            node.stop()


if __name__ == "__main__":
    main()
