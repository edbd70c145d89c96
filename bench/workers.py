"""Printer workers at scale: N emulated printers of a kind polled by one leader.

For each kind (`--apis`, OctoPrint by default) and N it starts `mock-printer --count N`,
one `server` node with PRINTER_WORKER_INTERVAL=1, registers the printers, gives a tenth of
them a print that lasts the whole run (their progress and temperatures change every
second), waits until those prints run, and measures over a window: polls/s achieved, tick
lag p50/p99 (the node's figures for the last 30 s: the window when it is 30 s), the node's
CPU (share of one core) and peak RSS, Raft commands/s, garbage-collector pauses and event-loop lag.

    .venv/bin/python bench/workers.py [--counts 500 1000 1500] [--window 30] [--profile DIR]
                                      [--no-opcua] [--baseline [--each-setting]]
                                      [--arrivals 2 --job-time 30]
                                      [--apis OctoPrint PrusaLink Moonraker]

`--arrivals R` is the farm as it is used (issue 20 §5): a spool of its own in each printer,
prints of `--job-time` seconds, and R new jobs a second (each for the next printer's spool)
submitted through the REST API during the warm-up and the window, so
printers start and finish prints (uploads, claims, starts, finishes, beds cleared) while
everything is polled; the figures add the jobs submitted and those done in the window.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mes.version import DATA_LEVEL  # noqa: E402
from tests.cluster import ServerProcess  # noqa: E402
from tests.emulators import free_ports  # noqa: E402
from tests.polling import wait_for  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Long enough to print through the warm-up and the window.
JOB_SECONDS = 600
GCODE = b"G28\nG1 X10 Y10 Z0.2\nG1 X20 E1\nM84\n"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def runtime_samples(api: httpx.Client) -> dict[tuple[str, str], float]:
    """The node's GC pause and loop lag histograms from /metrics: (sample, label) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = api.get(str(api.base_url.copy_with(path="/metrics")), timeout=60).text
    return {(s.name, s.labels.get("le", "") + s.labels.get("generation", "")): s.value
            for family in text_string_to_metric_families(text)
            if family.name in ("mes_gc_pause_seconds", "mes_event_loop_lag_seconds")
            for s in family.samples}


def runtime_delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
                  ) -> dict[str, float]:
    """Over a window: full collections and their pause, loop probes, and those late by more
    than 100 ms."""
    def grew(key: tuple[str, str]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    probes = grew(("mes_event_loop_lag_seconds_count", ""))
    return {"gc2_count": grew(("mes_gc_pause_seconds_count", "2")),
            "gc2_seconds": grew(("mes_gc_pause_seconds_sum", "2")),
            "gc_seconds": sum(grew(("mes_gc_pause_seconds_sum", g)) for g in "012"),
            "loop_probes": probes,
            "loop_late_100ms": probes - grew(("mes_event_loop_lag_seconds_bucket", "0.1"))}


def running(api: httpx.Client) -> int:
    """How many jobs print now."""
    jobs = api.get("/print_jobs", params={"status": "Running", "limit": "1000"}).json()
    return sum(1 for job in jobs if job["status"] == "Running")


def register(api: httpx.Client, bodies: list[dict[str, Any]], path: str = "/printers"
             ) -> None:
    """POST every body, 16 at a time (one by one takes minutes once workers poll)."""
    def post(body: dict[str, Any]) -> int:
        # Sent again with its key while the outcome is unknown (503: a write slower than
        # RAFT_WRITE_TIMEOUT while the workers start), as a client does.
        key = uuid.uuid4().hex
        for _ in range(20):
            status = api.post(path, json=body, timeout=60,
                              headers={"Idempotency-Key": key}).status_code
            if status != 503:
                return status
            time.sleep(0.5)
        return status

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(post, bodies))
    assert codes == [201] * len(bodies), sorted(set(codes))


# The node with some of the interpreter settings of mes/interpreter.py: none (CPython's
# default switch interval and collector thresholds), or only one of the two.
SETTINGS = {
    "both": None,
    "none": "i.tune_for_node = lambda: None",
    "switch": "i.tune_for_node = lambda: sys.setswitchinterval(i.SWITCH_INTERVAL)",
    "gc": "i.tune_for_node = lambda: gc.set_threshold(*i.GC_THRESHOLDS)",
}
LABELS = {"both": "", "none": "untuned", "switch": "switch", "gc": "gc only"}


def _command(settings: str) -> list[str] | None:
    """The node's command with only `settings` applied (None: the ordinary one)."""
    patch = SETTINGS[settings]
    if patch is None:
        return None
    return [sys.executable, "-c", f"import gc, sys; import mes.interpreter as i; {patch}; "
            "from mes.cli import server; server()"]


class Arrivals:
    """Submits `rate` jobs a second in a thread of its own, as users do, until stopped."""

    def __init__(self, api: httpx.Client, jobs: list[dict[str, Any]], rate: float) -> None:
        self.api, self.jobs, self.rate = api, jobs, rate
        self.submitted = 0
        self.refused: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Arrivals:
        if self.rate > 0:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            sent = self.submitted + sum(self.refused.values())
            status = self.api.post("/print_jobs", json=self.jobs[sent % len(self.jobs)],
                                   timeout=60,
                                   headers={"Idempotency-Key": uuid.uuid4().hex}).status_code
            if status == 201:
                self.submitted += 1
            else:
                self.refused[status] += 1
            due = started + (sent + 1) / self.rate
            self._stop.wait(max(0.0, due - time.monotonic()))  # the pace of arrivals


def done(api: httpx.Client) -> int:
    """How many jobs are Done (every page of the listing)."""
    total, cursor = 0, None
    while True:
        params = {"status": "Done", "limit": "1000", **({"cursor": cursor} if cursor else {})}
        response = api.get("/print_jobs", params=params)
        total += len(response.json())
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            return total


def run(count: int, window: float, base: Path, profile: Path | None = None,
        opcua: bool = False, settings: str = "both", arrivals: float = 0.0,
        job_time: int = JOB_SECONDS, kind: str = "OctoPrint") -> dict[str, Any]:
    """One measurement with `count` printers of api `kind` (py-spy samples the node into
    `profile`)."""
    port = free_ports(count)
    base.mkdir(parents=True, exist_ok=True)
    log = (base / f"emulator-{count}.log").open("wb")
    emulator = subprocess.Popen(
        [sys.executable, "-m", "mes.emulator.cli", "--api", kind, "--port", str(port),
         "--count", str(count), "--job-time", str(job_time)],
        stdout=log, stderr=subprocess.STDOUT)
    node = ServerProcess(0, base / f"n{count}", {"PRINTER_WORKER_INTERVAL": "1",
                                                 "OPCUA_MODE": "embedded" if opcua else "off",
                                                 "AUTO_CLEAR_BED": "true"})
    command = _command(settings)
    if command is not None:
        node.command = command
    node.data_dir.mkdir(parents=True)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port + count - 1}/emulator/status",
                                   timeout=1).status_code == 200, 60, "the emulator")
        node.start()
        wait_for(lambda: node.cluster()["role"] == "leader", 20, "the node to lead")
        api = node.client
        api.timeout = httpx.Timeout(60.0)  # a node polling 1,000+ printers answers slowly
        # One spool in every printer (the bench as it was), or with arrivals a spool of its
        # own in each, as a farm has them: a spool's grams change with every print, and
        # every printer holding it shows them.
        spools = [f"s{i}" for i in range(count)] if arrivals else ["s"] * count
        register(api, [{"id": sid, "type": "PLA", "color": "x",
                        "total_weight_in_grams": 100_000} for sid in sorted(set(spools))],
                 "/filaments")
        # printers of a kind added at a level wait for the cluster version
        wait_for(lambda: api.get("/cluster").json()["cluster_version"] == DATA_LEVEL, 30,
                 "the cluster version")
        register(api, [{"id": f"p{i}", "api": kind, "url": f"http://127.0.0.1:{port + i}",
                        "api_key": "mockkey", "worker": True, "filament_id": spools[i]}
                       for i in range(count)])
        file_id = api.post("/files", files={"file": ("b.gcode", GCODE)}).json()["id"]
        job = {"filament_id": "s", "file_id": file_id, "print_weight_in_grams": 1}
        register(api, [{**job, "filament_id": spools[i]} for i in range(count // 10)],
                 "/print_jobs")
        wait_for(lambda: api.get("/workers").json().get("printers") == count, 60,
                 "a worker per printer")
        try:
            wait_for(lambda: running(api) == count // 10, 120, "every print to run")
        except AssertionError:
            jobs = api.get("/print_jobs", params={"limit": "1000"}).json()
            print(Counter((j["status"], j.get("phase")) for j in jobs), flush=True)
            raise
        # Arrivals go to the printers that print nothing yet, round and round.
        arriving = Arrivals(api, [{**job, "filament_id": spools[i]}
                                  for i in range(count // 10, count)], arrivals).__enter__()
        # warm-up, not synchronisation: the starts' uploads and commands are over and every
        # worker ticks steadily; the lags the node reports are those of the last 30 s
        # (LAG_WINDOW), the window's when it is 30 s
        time.sleep(5)
        pid = node.process.pid  # type: ignore[union-attr]
        done0, submitted0 = done(api), arriving.submitted
        first, cpu0, index0 = api.get("/workers").json(), cpu_seconds(pid), \
            api.get("/cluster").json()["applied_index"]
        emulator_cpu0 = cpu_seconds(emulator.pid)
        runtime0 = runtime_samples(api)
        started = time.monotonic()
        spy = None if profile is None else subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
             "--duration", str(int(window)), "--rate", "50", "--format", "raw",
             "--nonblocking", "--output", str(profile / f"node-{count}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(window)  # the measurement window
        elapsed = time.monotonic() - started
        if spy is not None:
            spy.wait(60)
        last, cpu1, index1 = api.get("/workers").json(), cpu_seconds(pid), \
            api.get("/cluster").json()["applied_index"]
        emulator_cpu = cpu_seconds(emulator.pid) - emulator_cpu0
        runtime = runtime_delta(runtime0, runtime_samples(api))
        submitted, finished = arriving.submitted - submitted0, done(api) - done0
        arriving.__exit__()
        polls = last["ticks"] - first["ticks"]
        printing = running(api)
        return {
            "printers": count,
            "polls_per_s": polls / elapsed,
            "cpu_ms_per_poll": (cpu1 - cpu0) * 1000 / max(polls, 1),
            "emulator_core": emulator_cpu / elapsed,
            "lag_p50_ms": last["lag_p50_ms"], "lag_p99_ms": last["lag_p99_ms"],
            "cpu_core": (cpu1 - cpu0) / elapsed,
            "peak_rss_mb": peak_rss_mb(pid),
            "raft_cmds_per_s": (index1 - index0) / elapsed,
            "view_reads_per_s": (last.get("view_reads", 0) - first.get("view_reads", 0))
            / elapsed,
            "printing": printing,
            "jobs_submitted": submitted, "jobs_done": finished,
            "jobs_refused": dict(arriving.refused),
            **runtime,
        }
    finally:
        node.stop()
        node.client.close()
        emulator.terminate()
        emulator.wait(20)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[500, 1000, 1500])
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured per N")
    parser.add_argument("--profile", type=Path,
                        help="a folder for py-spy's samples of the node (collapsed stacks)")
    parser.add_argument("--no-opcua", action="store_true",
                        help="run the node without its embedded OPC UA server (on by "
                        "default, as a user's node runs: it mirrors every printer)")
    parser.add_argument("--baseline", action="store_true",
                        help="also run each N with CPython's default switch interval and "
                        "collector thresholds (the node's interpreter settings off)")
    parser.add_argument("--each-setting", action="store_true",
                        help="with --baseline, also run each N with only the switch interval "
                        "and only the collector thresholds (an A/B of each setting)")
    parser.add_argument("--arrivals", type=float, default=0.0,
                        help="new jobs a second, submitted during the warm-up and the window")
    parser.add_argument("--job-time", type=int, default=JOB_SECONDS,
                        help="seconds each emulated print lasts")
    parser.add_argument("--apis", nargs="+", default=["OctoPrint"],
                        choices=["OctoPrint", "PrusaLink", "Moonraker", "Duet"],
                        help="the kinds of printer emulated, each measured in turn")
    args = parser.parse_args()
    print("one leader node, PRINTER_WORKER_INTERVAL=1, emulated printers, "
          f"a tenth of them printing ({args.job_time} s prints, {args.arrivals:g} new jobs "
          "a second); 2-core machine shared with the emulator; OPC UA "
          f"server {'off' if args.no_opcua else 'on'}\n")
    print(f"{'api':>9} {'printers':>8} {'polls/s':>8} {'lag p50':>9} {'lag p99':>9} "
          f"{'node CPU':>9} {'CPU/poll':>9} {'peak RSS':>9} {'raft cmd/s':>10} {'printing':>9} "
          f"{'emulator':>9} {'views/s':>7}")
    fits = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = ["both"]
        if args.baseline:
            variants += ["none", "switch", "gc"] if args.each_setting else ["none"]
        runs = [(kind, count, settings) for kind in args.apis for count in args.counts
                for settings in variants]
        for kind, count, settings in runs:
            r = run(count, args.window, Path(tmp) / f"{kind}-{count}-{settings}", args.profile,
                    not args.no_opcua, settings, args.arrivals, args.job_time, kind)
            print(f"{kind:>9} {r['printers']:>8} {r['polls_per_s']:>8.0f} "
                  f"{r['lag_p50_ms']:>7.1f}ms {r['lag_p99_ms']:>7.1f}ms {r['cpu_core']:>8.0%} "
                  f"{r['cpu_ms_per_poll']:>7.2f}ms {r['peak_rss_mb']:>7.0f}MB "
                  f"{r['raft_cmds_per_s']:>10.1f} {r['printing']:>9} "
                  f"{r['emulator_core']:>8.0%} {r['view_reads_per_s']:>7.1f}", flush=True)
            label = LABELS[settings]
            print(f"{label:>8} GC: {r['gc_seconds'] * 1000:.0f} ms paused in the window, "
                  f"{r['gc2_count']:.0f} full collections ({r['gc2_seconds'] * 1000:.0f} ms); "
                  f"event loop: {r['loop_late_100ms']:.0f} of {r['loop_probes']:.0f} probes "
                  "more than 100 ms late", flush=True)
            if args.arrivals:
                print(f"{'':>8} jobs: {r['jobs_submitted']} submitted, {r['jobs_done']} done "
                      f"in the window; refused: {r['jobs_refused'] or 'none'}", flush=True)
            fits.append(1000 / r["cpu_ms_per_poll"])
    print(f"\nnode CPU is the node process's own (user + system), the emulator's shown apart; "
          f"at these costs one core polls about {min(fits):,.0f}-{max(fits):,.0f} printers "
          "a second")
    print("goal: 1,000 printers at 1 s with the node under 50% of a core and tick lag p99 "
          "under 100 ms")


if __name__ == "__main__":
    main()
