"""A node's cold start (process start to ready) and recovery time against the journal's length.

Prints, in one run:
1. one node on an empty DATA_DIR, OPCUA_MODE=embedded and off (`--repeats` times each,
   min/median): seconds from Popen to /health/live 200, to /health 200 (ready) and to the
   embedded OPC UA server's address space built (`opcua.ready` in /cluster);
2. the interpreter's start and the imports alone (`python -c "import mes.cli"`, and with
   what `server()` imports after it), median of `--repeats`;
3. recovery: one node (OPCUA_MODE=off) gets N print jobs from 16 writer threads, is stopped
   (SIGTERM) and started again on its DATA_DIR and ports, `--repeats` times (median): the
   seconds to live, to ready and to its applied index back where it was, and the replay's
   ms per 1,000 entries (beyond a restart with no jobs written, and a least-squares fit).
   Once with snapshots effectively off and once with the default RAFT_SNAPSHOT_ENTRIES /
   RAFT_SNAPSHOT_INTERVAL, and a SIGKILL (crash) restart for the largest N in both.

    .venv/bin/python bench/cold_start.py [--entries 1000 4000 10000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mes.config import Settings  # noqa: E402
from tests.auth import admin_headers  # noqa: E402
from tests.cluster import PROBE_TIMEOUT, ServerProcess  # noqa: E402
from tests.polling import wait_for  # noqa: E402

DEADLINE = 300.0  # seconds a start may take before the benchmark gives up
WRITERS = 16
SPOOL_GRAMS = 100_000  # the most a spool may weigh; every job takes 1 g
NO_SNAPSHOTS = {"RAFT_SNAPSHOT_ENTRIES": str(10**12), "RAFT_SNAPSHOT_INTERVAL": str(1e12)}


class TimedNode(ServerProcess):
    """A ServerProcess whose start() returns right after Popen: the caller times the rest."""

    def wait_answering(self, what: str) -> None:
        pass


def timed_start(node: TimedNode, target: int | None = None,
                opcua: bool = False) -> dict[str, float]:
    """Start `node`; seconds from just before Popen to each milestone: live, ready, opcua
    (address space built, if `opcua`), applied (applied index >= `target`, if given)."""
    wanted = {"live", "ready"} | ({"opcua"} if opcua else set()) \
        | ({"applied"} if target is not None else set())
    found: dict[str, float] = {}
    began = time.perf_counter()
    node.start()
    while wanted - found.keys():
        if not node.alive:
            raise RuntimeError(f"node exited: {node.log_tail()}")
        if time.perf_counter() - began > DEADLINE:
            raise TimeoutError(f"{sorted(wanted - found.keys())} not within {DEADLINE} s")
        try:
            if "live" not in found and node.client.get(
                    "/health/live", timeout=PROBE_TIMEOUT).status_code == 200:
                found["live"] = time.perf_counter() - began
            if "live" in found and not {"ready", "applied"} <= found.keys():
                health = node.client.get("/health", timeout=PROBE_TIMEOUT)
                now = time.perf_counter() - began
                if health.status_code == 200:
                    found.setdefault("ready", now)
                if target is not None and health.json().get("applied_index", 0) >= target:
                    found.setdefault("applied", now)
            if "opcua" in wanted and "opcua" not in found and "ready" in found:
                view = node.cluster().get("opcua")
                if view and view["ready"]:
                    found["opcua"] = time.perf_counter() - began
                    found.update({k: view[k] or 0.0 for k in ("model_seconds", "build_seconds")})
        except (httpx.HTTPError, OSError, ValueError):
            pass
        time.sleep(0.02)
    return found


def summary(values: list[float]) -> str:
    return f"min {min(values):6.2f}  median {statistics.median(values):6.2f}"


def cold_starts(repeats: int) -> None:
    print(f"1. cold start, empty DATA_DIR, seconds from Popen ({repeats} run(s) each)")
    for mode in ("embedded", "off"):
        runs: list[dict[str, float]] = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                node = TimedNode(0, Path(tmp), {"OPCUA_MODE": mode})
                try:
                    runs.append(timed_start(node, opcua=mode == "embedded"))
                finally:
                    node.stop()
        for key, label in (("live", "/health/live 200"), ("ready", "/health 200 (ready)"),
                           ("opcua", "OPC UA address space built"),
                           ("model_seconds", "  of which OPC UA model load"),
                           ("build_seconds", "  of which OPC UA farm build")):
            if key in runs[0]:
                print(f"  OPCUA_MODE={mode:<8} {label:<30} {summary([r[key] for r in runs])}")


def import_times(repeats: int) -> None:
    print(f"\n2. interpreter and imports alone, wall seconds (median of {repeats})")
    for label, code in (("python -c pass", "pass"), ("import mes.cli", "import mes.cli"),
                        ("+ what server() imports", "import mes.cli, uvicorn, mes.api.app, "
                                                    "mes.node, mes.interpreter")):
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            times.append(time.perf_counter() - began)
        print(f"  {label:<28} {statistics.median(times):6.3f}")


def write_jobs(node: TimedNode, count: int) -> float:
    """POST `count` print jobs from WRITERS threads; writes/s."""
    spools = count // SPOOL_GRAMS + 1
    assert node.client.post("/printers", json={"id": "p"}).status_code == 201
    for i in range(spools):
        spool = {"id": f"s{i}", "type": "PLA", "color": "x", "total_weight_in_grams": SPOOL_GRAMS}
        assert node.client.post("/filaments", json=spool).status_code == 201
    lock = threading.Lock()
    state = {"next": 0, "failed": 0}

    def writer() -> None:
        with httpx.Client(base_url=node.client.base_url, headers=admin_headers(),
                          timeout=30.0) as client:
            while True:
                with lock:
                    n = state["next"]
                    if n >= count or state["failed"] > count // 10 + 100:
                        return
                    state["next"] += 1
                body = {"id": f"j{n}", "printer_id": "p", "filament_id": f"s{n % spools}",
                        "filepath": "bench.gcode", "print_weight_in_grams": 1}
                if client.post("/print_jobs", json=body).status_code != 201:
                    with lock:  # a failed job's id is skipped, not retried
                        state["failed"] += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if state["failed"]:
        print(f"  ({state['failed']} of {count} writes failed)")
    return count / (time.perf_counter() - began)


def applied_index(node: TimedNode) -> int:
    return int(node.client.get("/health", timeout=PROBE_TIMEOUT).json()["applied_index"])


def sizes(node: TimedNode) -> str:
    journal, snapshot = node.data_dir / "raft.journal", node.data_dir / "raft.snapshot"
    mb = [f.stat().st_size / 1e6 if f.exists() else 0.0 for f in (journal, snapshot)]
    return f"journal {mb[0]:5.1f} MB, snapshot {mb[1]:5.1f} MB"


def restarts(node: TimedNode, how: str, times: int) -> tuple[int, dict[str, float], str]:
    """Stop `node` (SIGTERM or SIGKILL) and time its start, `times` times: the median applied
    index it had, the median seconds to each milestone, its files at the last restart."""
    runs: list[tuple[int, dict[str, float]]] = []
    on_disk = ""
    for _ in range(times):
        target = applied_index(node)
        if how == "SIGTERM":
            node.stop()
        else:
            node.kill()
        on_disk = sizes(node)
        runs.append((target, timed_start(node, target=target)))
    found = {key: statistics.median(r[1][key] for r in runs) for key in ("live", "ready",
                                                                          "applied")}
    return int(statistics.median(r[0] for r in runs)), found, on_disk


def recovery(entries: list[int], snapshots: bool, repeats: int) -> None:
    defaults = Settings.model_fields
    env = {"OPCUA_MODE": "off", **({} if snapshots else NO_SNAPSHOTS)}
    label = ("snapshots on (defaults: RAFT_SNAPSHOT_ENTRIES="
             f"{defaults['raft_snapshot_entries'].default}, RAFT_SNAPSHOT_INTERVAL="
             f"{defaults['raft_snapshot_interval'].default:g} s)" if snapshots
             else "snapshots off (RAFT_SNAPSHOT_ENTRIES=1e12, RAFT_SNAPSHOT_INTERVAL=1e12 s)")
    print(f"\n3. recovery, one node, OPCUA_MODE=off, {label}; seconds from Popen, median of "
          f"{repeats} SIGTERM restart(s), one SIGKILL")
    print(f"  {'written':>8} {'applied':>8} {'writes/s':>8} {'stop':>7} {'live':>6} {'ready':>6}"
          f" {'applied':>8} {'replay ms/1k':>12}   on disk at restart")
    base: tuple[int, float] | None = None
    points: list[tuple[int, float]] = []  # (applied index, seconds to applied) of SIGTERM rows
    for count in [0, *entries]:
        with tempfile.TemporaryDirectory() as tmp:
            node = TimedNode(0, Path(tmp), env)
            try:
                timed_start(node)
                wait_for(node.admin_ready, 60, "the admin's token to work")
                rate = write_jobs(node, count) if count else 0.0
                for how in ["SIGTERM", "SIGKILL"] if count == max(entries) else ["SIGTERM"]:
                    target, found, on_disk = restarts(node, how, repeats if how == "SIGTERM"
                                                      else 1)
                    if base is None:
                        base = (target, found["applied"])
                    if how == "SIGTERM":
                        points.append((target, found["applied"]))
                    replay = ((found["applied"] - base[1]) / (target - base[0]) * 1e6
                              if target > base[0] else 0.0)
                    print(f"  {count:8d} {target:8d} {rate:8.0f} {how:>7} {found['live']:6.2f}"
                          f" {found['ready']:6.2f} {found['applied']:8.2f} {replay:12.1f}"
                          f"   {on_disk}")
            finally:
                node.stop()
    if len(points) > 2:
        fit = statistics.linear_regression(*zip(*points, strict=True))
        print(f"  least squares over the SIGTERM rows: {fit.intercept:.2f} s + "
              f"{fit.slope * 1e6:.1f} ms per 1,000 entries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[1000, 4000, 10000],
                        help="journal lengths (print jobs written) for the recovery runs")
    parser.add_argument("--repeats", type=int, default=3,
                        help="cold starts per OPC UA mode, imports, SIGTERM restarts per N")
    parser.add_argument("--quick", action="store_true", help="entries 500 2000, repeats 1")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.repeats = [500, 2000], 1
    cold_starts(args.repeats)
    import_times(args.repeats)
    for snapshots in (False, True):
        recovery(args.entries, snapshots, args.repeats)
    print("\nreplay ms/1k: (restart to applied - the same with no jobs written) per 1,000 "
          "entries of the applied index")


if __name__ == "__main__":
    main()
