"""Upgrade from release 0.1.0 while printing (issue 17).

A farm of release 0.1.0 (commit d64c92f, extracted from this repository's history: see
tests/release.py) prints on emulated OctoPrint printers: jobs Done, Running and Queued. Each
node in turn is stopped (SIGTERM) and started on the current code with the same DATA_DIR
and ports, waiting for its readiness before the next, while a writer keeps submitting jobs
and spool changes. Afterwards every job printed before keeps its history exactly, every job
is Done exactly once (one Running, one Done, one start at the printers), every spool is
charged once per job, every acknowledged write is on every node and all digests agree.
The same for a single node.

The data-version contract (GET /api/v1/cluster: `cluster_version`, each node's `version`
and `level`) is checked by the `*_version*` helpers below; their failures are collected and
reported at the end, after every other check ran.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth import admin_headers
from tests.cluster import ServerProcess
from tests.emulators import Emulator, StartEmulator
from tests.farm_helpers import GCODE
from tests.polling import wait_for
from tests.release import ReleaseCluster, ReleaseServerProcess, extract_release

pytestmark = pytest.mark.cluster

SPOOLS = ("s0", "s1", "s2")
SPOOL_GRAMS = 1000
WEIGHT = 5
JOB_TIME = 4.0  # seconds an emulated print takes
LEASE = 5.0
SETTINGS = {"PRINTER_WORKER_INTERVAL": "0.3", "AUTO_CLEAR_BED": "true",
            "NODE_LEASE_SECONDS": str(LEASE), "NODE_LEASE_RENEW": "1",
            "SHARD_BALANCE_INTERVAL": "0.3",
            # Snapshots every few dozen entries: old nodes snapshot the mixed phase, and
            # the upgraded code must restore what 0.1.0 wrote and agree with the others.
            "RAFT_SNAPSHOT_ENTRIES": "60"}
PAINTED = "painted"  # the spool whose colour the writer keeps changing
LOCAL = {"X-Read-Consistency": "local"}


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 0.1.0's tree (skipped without the commit; failed in CI)."""
    return extract_release(tmp_path_factory)


# ---------------------------------------------------------------- reads


def local_rows(node: ServerProcess, path: str) -> list[dict[str, Any]]:
    """Every row of a list, read from this node's own applied state (local reads)."""
    return node.every(path, timeout=10.0, headers=LOCAL)


def jobs_on(node: ServerProcess) -> dict[str, dict[str, Any]]:
    return {job["id"]: job for job in local_rows(node, "/print_jobs")}


def history(node: ServerProcess, job_id: str) -> list[dict[str, Any]]:
    return local_rows(node, f"/print_jobs/{job_id}/history")


def statuses(node: ServerProcess) -> Counter[str]:
    return Counter(job["status"] for job in jobs_on(node).values())


def running_jobs(node: ServerProcess) -> list[dict[str, Any]]:
    return [j for j in jobs_on(node).values() if j["status"] == "Running"]


def driven_by(node: ServerProcess) -> dict[str, str | None]:
    """Per printer, the Raft address of the node driving it."""
    return {p["id"]: p["driven_by"] for p in local_rows(node, "/printers")}


# ---------------------------------------------------------------- writes


def build_farm(api: ReleaseServerProcess, emulator: Emulator, printers: int) -> str:
    """Spools, floating emulated OctoPrint printers (spools spread over them), a file."""
    for spool in (*SPOOLS, PAINTED):
        body = {"id": spool, "type": "PLA", "color": spool,
                "total_weight_in_grams": SPOOL_GRAMS}
        created = api.client.post("/filaments", json=body)
        assert created.status_code == 201, created.text
    for i in range(printers):
        body = {"id": f"p{i}", "api": "OctoPrint", "url": emulator.url(i),
                "api_key": "mockkey", "worker": True, "filament_id": SPOOLS[i % len(SPOOLS)]}
        created = api.client.post("/printers", json=body)
        assert created.status_code == 201, created.text
    stored = api.client.post("/files", files={"file": ("part.gcode", GCODE)})
    assert stored.status_code == 201, stored.text
    return str(stored.json()["id"])


def job_body(job_id: str, n: int, file_id: str) -> dict[str, Any]:
    return {"id": job_id, "filament_id": SPOOLS[n % len(SPOOLS)], "file_id": file_id,
            "print_weight_in_grams": WEIGHT}


def submit_jobs(nodes: list[ReleaseServerProcess], ids: list[str], file_id: str) -> None:
    for n, job_id in enumerate(ids):
        node = nodes[n % len(nodes)]
        created = node.client.post("/print_jobs", json=job_body(job_id, n, file_id),
                                   headers={"Idempotency-Key": f"submit-{job_id}"})
        assert created.status_code == 201, created.text


class Writer(threading.Thread):
    """Keeps writing (jobs, new spools, a spool's colour) through whichever node answers,
    retrying a write with its Idempotency-Key until a node acknowledges it (2xx); remembers
    what was acknowledged."""

    def __init__(self, nodes: list[ReleaseServerProcess], file_id: str,
                 pace: float = 0.3) -> None:
        super().__init__(name="upgrade-writer", daemon=True)
        self.clients = [httpx.Client(base_url=f"http://127.0.0.1:{n.http_port}/api/v1",
                                     headers=admin_headers(), timeout=10.0) for n in nodes]
        self.file_id = file_id
        self.pace = pace
        self.stopping = threading.Event()
        self.turn = 0
        self.acked_jobs: list[str] = []
        self.acked_spools: list[str] = []
        self.colors: list[tuple[str, bool]] = []  # each colour sent to PAINTED; acknowledged?
        self.unknown: list[str] = []  # never acknowledged (outcome unknown)
        self.refused: list[str] = []  # answered 4xx: none expected
        self.errors: list[str] = []  # answered 500: none expected
        self.attempts = 0
        self.acknowledged = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stopping.wait(self.pace):
                kind = n % 3
                if kind in (0, 1):  # two jobs for each spool write
                    job_id = f"w{n:03d}"
                    if self.send("POST", "/print_jobs", job_body(job_id, n, self.file_id),
                                 f"writer-{job_id}"):
                        self.acked_jobs.append(job_id)
                elif n % 2:
                    spool_id = f"ws{n:03d}"
                    body = {"id": spool_id, "type": "PETG", "color": "blue",
                            "total_weight_in_grams": 250}
                    if self.send("POST", "/filaments", body, f"writer-{spool_id}"):
                        self.acked_spools.append(spool_id)
                else:
                    color = f"c{n:03d}"
                    acked = self.send("PATCH", f"/filaments/{PAINTED}", {"color": color},
                                      f"writer-{PAINTED}-{color}")
                    self.colors.append((color, acked))
                n += 1
        except BaseException as exc:  # reported by the test (finish)
            self.failure = exc
        finally:
            for client in self.clients:
                client.close()

    def send(self, method: str, path: str, body: dict[str, Any], key: str) -> bool:
        """Retry through the nodes in turn until one acknowledges (True) or 60 s pass."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            client = self.clients[self.turn % len(self.clients)]
            self.turn += 1
            self.attempts += 1
            try:
                answer = client.request(method, path, json=body,
                                        headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                time.sleep(0.05)  # that node is down: back off, then the next one
                continue
            if 200 <= answer.status_code < 300:
                self.acknowledged += 1
                return True
            if answer.status_code == 500:
                self.errors.append(f"{method} {path}: 500 {answer.text[:300]}")
            elif answer.status_code < 500:
                self.refused.append(f"{method} {path}: {answer.status_code} "
                                    f"{answer.text[:300]}")
                return False
            time.sleep(0.05)  # 502/503/504: outcome unknown, retried with the same key
        self.unknown.append(f"{method} {path} {key}")
        return False

    def finish(self) -> None:
        self.stopping.set()
        self.join(90)
        assert not self.is_alive(), "the writer did not finish"
        if self.failure is not None:
            raise AssertionError(f"the writer failed: {self.failure!r}") from self.failure


def missing_writes(node: ServerProcess, jobs: set[str], spools: set[str],
                   colors: set[str]) -> dict[str, Any]:
    """The acknowledged writes this node's local reads do not show."""
    on_node = set(jobs_on(node))
    spool_rows = {s["id"]: s for s in local_rows(node, "/filaments")}
    gone: dict[str, Any] = {"jobs": sorted(jobs - on_node),
                            "spools": sorted(spools - set(spool_rows))}
    color = spool_rows.get(PAINTED, {}).get("color")
    if color not in colors:
        gone["colour"] = [color, sorted(colors)]
    return {k: v for k, v in gone.items() if v}


# ---------------------------------------------------------------- version contract


def check_mixed_phase_version(upgraded: list[ReleaseServerProcess],
                              problems: list[str], timeout: float = 60.0) -> None:
    """While some nodes still run 0.1.0, an upgraded node reports `cluster_version` 1."""
    for node in upgraded:
        def reports_one(node: ReleaseServerProcess = node) -> bool:
            return bool(node.cluster().get("cluster_version") == 1)

        try:
            wait_for(reports_one, timeout,
                     f"upgraded node {node.index} to report cluster_version 1")
        except AssertionError:
            try:
                shown = node.cluster().get("cluster_version", "<absent>")
            except httpx.HTTPError as exc:
                shown = repr(exc)
            problems.append(f"mixed phase: upgraded node {node.index} reports "
                            f"cluster_version {shown!r}, expected 1")


def check_upgraded_versions(nodes: list[ReleaseServerProcess], problems: list[str],
                            timeout: float = 60.0) -> None:
    """Once every node runs the current code: `cluster_version` is DATA_LEVEL on every
    node, and every entry of `nodes` shows `version` RELEASE and `level` DATA_LEVEL."""
    try:
        from mes.version import DATA_LEVEL, RELEASE
    except ImportError as exc:
        problems.append(f"mes.version: {exc}")
        return

    def wrong(node: ReleaseServerProcess) -> list[str]:
        view = node.cluster()
        found = []
        if view.get("cluster_version") != DATA_LEVEL:
            found.append(f"node {node.index}: cluster_version "
                         f"{view.get('cluster_version', '<absent>')!r} != {DATA_LEVEL}")
        for entry in view.get("nodes", []):
            shown = (entry.get("version", "<absent>"), entry.get("level", "<absent>"))
            if shown != (RELEASE, DATA_LEVEL):
                found.append(f"node {node.index} shows {entry.get('address')}: "
                             f"(version, level) {shown!r} != {(RELEASE, DATA_LEVEL)!r}")
        return found

    try:
        wait_for(lambda: not any(wrong(n) for n in nodes), timeout,
                 "every node to show the current version and data level")
    except AssertionError:
        for node in nodes:
            try:
                problems.extend(f"after the upgrade: {p}" for p in wrong(node))
            except httpx.HTTPError as exc:
                problems.append(f"after the upgrade: node {node.index}: {exc!r}")


# ---------------------------------------------------------------- diagnostics


def wait_ready(nodes: list[ReleaseServerProcess], timeout: float = 90.0) -> None:
    """Every node ready (a leader known, caught up, applying); else say why not."""
    try:
        wait_for(lambda: all(n.healthy() for n in nodes), timeout, "every node ready")
    except AssertionError:
        views = {}
        for node in nodes:
            try:
                views[node.index] = node.client.get("/health", timeout=2.0).json()
            except httpx.HTTPError as exc:
                views[node.index] = repr(exc)
        raise AssertionError(f"not every node is ready after {timeout} s: {views}; "
                             f"{log_errors(nodes)}") from None


def log_errors(nodes: list[ReleaseServerProcess]) -> dict[int, str]:
    """Per node, how many tracebacks its log holds and the first one's exception line."""
    found = {}
    for node in nodes:
        lines = (node.log_path.read_text(errors="replace").splitlines()
                 if node.log_path.exists() else [])
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
        if not starts:
            continue
        first = next((line for line in lines[starts[0] + 1:]
                      if line and not line.startswith((" ", "Traceback"))), "?")
        found[node.index] = f"{len(starts)} tracebacks, the first: {first}"
    return found


def diagnostics(cluster: ReleaseCluster, emulator: Emulator | None) -> str:
    parts = [f"tracebacks in the nodes' logs: {log_errors(cluster.nodes)}"]
    for node in cluster.nodes:
        parts.append(f"===== node {node.index} {node.raft_address} runs {node.history} "
                     f"alive={node.alive}")
        try:
            parts.append(f"cluster: {node.cluster()}")
            parts.append(f"jobs: {statuses(node)}")
        except (httpx.HTTPError, AssertionError) as exc:
            parts.append(f"(no view: {exc!r})")
        parts.append(node.log_tail())
    if emulator is not None and emulator.log.exists():
        parts.append(f"===== emulator\n{emulator.log.read_text(errors='replace')[-2000:]}")
    return "\n".join(parts)


# ---------------------------------------------------------------- the scenario


def upgrade_while_printing(size: int, base: Path, release: Path,
                           start_emulator: StartEmulator) -> None:
    printers = 2 * size if size > 1 else 3
    emulator = start_emulator("OctoPrint", count=printers, job_time=JOB_TIME)
    cluster = ReleaseCluster(size, base, release, **SETTINGS)
    writer: Writer | None = None
    problems: list[str] = []  # the version contract's, reported last
    timings: dict[str, float] = {}
    began = time.monotonic()
    try:
        cluster.start()
        assert all(n.history == ["0.1.0"] for n in cluster.nodes)
        api = cluster.nodes[0]
        file_id = build_farm(api, emulator, printers)
        timings["farm of 0.1.0 up"] = time.monotonic() - began

        # Jobs Done on 0.1.0: their histories must survive the upgrade exactly.
        printed = [f"d{n:02d}" for n in range(printers)]
        submit_jobs(cluster.nodes, printed, file_id)
        wait_for(lambda: all(jobs_on(api).get(j, {}).get("status") == "Done" for j in printed),
                 90, "the first jobs Done on 0.1.0")
        before = {job_id: history(api, job_id) for job_id in printed}
        for changes in before.values():
            assert [h["to_status"] for h in changes] == ["Queued", "Running", "Done"], changes
        # Jobs Running and Queued when the upgrade begins.
        pending = [f"q{n:02d}" for n in range(3 * printers)]
        submit_jobs(cluster.nodes, pending, file_id)
        wait_for(lambda: statuses(api)["Running"] >= min(printers, 2), 60,
                 "prints running on 0.1.0")
        at_start = statuses(api)
        print(f"\njobs when the upgrade begins: {dict(at_start)}")
        assert at_start["Done"] and at_start["Running"] and at_start["Queued"], at_start
        timings["jobs Done, Running, Queued on 0.1.0"] = time.monotonic() - began

        writer = Writer(cluster.nodes, file_id)
        writer.start()
        leader = cluster.nodes[cluster.wait_leader().index]
        order = [n for n in cluster.nodes if n is not leader] + [leader]
        interrupted: dict[int, list[str]] = {}
        for step, node in enumerate(order):
            viewer = next((n for n in cluster.nodes if n is not node), node)

            def printing_on_node(node: ReleaseServerProcess = node,
                                 viewer: ReleaseServerProcess = viewer) -> list[str]:
                drivers = driven_by(viewer)
                return [j["id"] for j in running_jobs(viewer)
                        if drivers.get(j["assigned_printer_id"]) == node.raft_address]

            # Stop a node while it drives a print (else while any print runs).
            try:
                interrupted[node.index] = wait_for(printing_on_node, 20,
                                                   f"a print driven by node {node.index}")
            except AssertionError:
                interrupted[node.index] = []
                wait_for(partial(running_jobs, viewer), 60, "a print running")
            started = time.monotonic()
            node.upgrade()
            timings[f"node {node.index} restarted on the current code"] = (
                time.monotonic() - started)
            print(f"\nnode {node.index}: 0.1.0 exited with {node.exits[-1]} on SIGTERM")
            assert node.history == ["0.1.0", "current"]
            wait_ready(cluster.nodes)
            if step < size - 1:  # some nodes still run 0.1.0
                check_mixed_phase_version(order[:step + 1], problems)
        print(f"\nprints driven by the node when it stopped: {interrupted}")
        timings["upgrade done"] = time.monotonic() - began
        # Some more writes on the upgraded farm, then the writer stops.
        mark = writer.acknowledged
        wait_for(lambda: writer.acknowledged >= mark + 9 or not writer.is_alive(), 60,
                 "writes acknowledged by the upgraded farm")
        writer.finish()
        print(f"writer: {len(writer.acked_jobs)} jobs, {len(writer.acked_spools)} spools, "
              f"{sum(a for _, a in writer.colors)}/{len(writer.colors)} colours acknowledged "
              f"in {writer.attempts} attempts; unknown {writer.unknown}")
        assert not writer.refused, writer.refused
        assert not writer.errors, writer.errors

        # Every job prints, exactly once.
        final = cluster.wait_leader()
        try:
            wait_for(lambda: set(statuses(final)) == {"Done"}, 150, "every job Done")
        except AssertionError:
            waiting = [(j["id"], j["status"], j["phase"], j["assigned_printer_id"], j["hold"])
                       for j in jobs_on(final).values() if j["status"] != "Done"]
            raise AssertionError(f"not Done: {waiting}") from None
        timings["every job Done"] = time.monotonic() - began
        cluster.assert_same_state(timeout=60)
        jobs = jobs_on(final)
        expected = set(printed) | set(pending) | set(writer.acked_jobs)
        assert expected <= set(jobs), expected - set(jobs)

        for node in cluster.nodes:
            # The jobs printed on 0.1.0 keep their history exactly, on every node.
            for job_id, changes in before.items():
                assert history(node, job_id) == changes, (node.index, job_id)
        twice = {}
        for job_id in jobs:
            changes = history(final, job_id)
            steps = [h["to_status"] for h in changes]
            if steps != ["Queued", "Running", "Done"]:
                twice[job_id] = changes
        assert not twice, f"histories other than Queued, Running, Done: {twice}"

        # Each print started once at the printers.
        starts: Counter[str] = Counter()
        for i in range(printers):
            status = emulator.status(i)
            assert all(times == 1 for times in status["starts"].values()), (i, status["starts"])
            starts.update(status["starts"])
        assert starts == Counter({f"mes-{job_id}.gcode": 1 for job_id in jobs}), (
            starts - Counter({f"mes-{job_id}.gcode": 1 for job_id in jobs}))

        # Each spool charged once per job.
        charged: Counter[str] = Counter()
        for job in jobs.values():
            charged[job["filament_id"]] += job["print_weight_in_grams"]
        for spool in SPOOLS:
            data = final.client.get(f"/filaments/{spool}", headers=LOCAL).json()
            assert data["remaining_weight_in_grams"] == SPOOL_GRAMS - charged[spool], (
                spool, data, charged[spool])
            assert data["reserved_weight_in_grams"] == 0, data

        # Every acknowledged write is on every node (each read locally).
        last_acked = max((i for i, (_, acked) in enumerate(writer.colors) if acked),
                         default=-1)
        colors = ({c for c, _ in writer.colors[last_acked:]} if last_acked >= 0
                  else {PAINTED} | {c for c, _ in writer.colors})
        for node in cluster.nodes:
            def nothing_missing(node: ReleaseServerProcess = node) -> bool:
                return not missing_writes(node, expected, set(writer.acked_spools), colors)

            try:
                wait_for(nothing_missing, 60, f"every acknowledged write on node {node.index}")
            except AssertionError:
                gone = missing_writes(node, expected, set(writer.acked_spools), colors)
                raise AssertionError(f"node {node.index} lacks acknowledged writes: "
                                     f"{gone}") from None
        cluster.assert_same_state(timeout=60)

        check_upgraded_versions(cluster.nodes, problems)
        timings["total"] = time.monotonic() - began
        print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        assert not problems, "version contract: " + "; ".join(problems)
    except BaseException:
        print(f"timings (s): {timings}")
        if problems:
            print(f"version problems: {problems}")
        print(diagnostics(cluster, emulator))
        raise
    finally:
        if writer is not None and writer.is_alive():
            writer.stopping.set()
            writer.join(90)
        cluster.stop()


def test_a_3_node_farm_of_release_0_1_0_upgrades_node_by_node_while_printing(
        tmp_path: Path, release: Path, start_emulator: StartEmulator) -> None:
    upgrade_while_printing(3, tmp_path / "cluster", release, start_emulator)


def test_a_single_node_of_release_0_1_0_upgrades_while_printing(
        tmp_path: Path, release: Path, start_emulator: StartEmulator) -> None:
    upgrade_while_printing(1, tmp_path / "single", release, start_emulator)
