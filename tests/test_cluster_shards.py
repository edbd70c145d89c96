"""Every node drives printers: 30 emulated printers over a 3-node cluster of real processes;
a node killed (SIGKILL) or stopped (SIGSTOP) past its lease loses its printers to the others,
never starts a print twice and never talks to a printer it lost."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, ServerProcess
from tests.emulators import Emulator, StartEmulator
from tests.farm_helpers import GCODE
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

PRINTERS = 30
LEASE = 5.0
SPOOLS = ("s0", "s1", "s2")
SETTINGS = {"PRINTER_WORKER_INTERVAL": "0.3", "AUTO_CLEAR_BED": "true",
            "NODE_LEASE_SECONDS": str(LEASE), "NODE_LEASE_RENEW": "1",
            "SHARD_BALANCE_INTERVAL": "0.3"}


def agent(node: ServerProcess) -> str:
    """The User-Agent a node's workers send to printers."""
    return f"mes node {node.raft_address}"


def printers_of(node: ServerProcess) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = node.every("/printers")
    return data


def driving(view_from: ServerProcess) -> dict[str, list[str]]:
    """Per node address, the printers it drives (GET /cluster)."""
    return {n["address"]: n["printers"] for n in view_from.cluster()["nodes"]}


def jobs_on(node: ServerProcess) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = node.every("/print_jobs")
    return data


def count(node: ServerProcess, status: str) -> int:
    return sum(1 for j in jobs_on(node) if j["status"] == status)


def build_farm(cluster: Cluster, emulator: Emulator) -> tuple[ServerProcess, str]:
    """Spools, 30 floating printers and a stored file; returns a follower and the file."""
    cluster.start()
    api = cluster.followers()[0]
    for spool in SPOOLS:
        body = {"id": spool, "type": "PLA", "color": spool, "total_weight_in_grams": 1000}
        assert api.client.post("/filaments", json=body).status_code == 201
    for i in range(PRINTERS):
        body = {"id": f"e{i:02d}", "api": "OctoPrint", "url": emulator.url(i),
                "api_key": "mockkey", "worker": True, "filament_id": SPOOLS[i % 3]}
        created = api.client.post("/printers", json=body)
        assert created.status_code == 201, created.text
    stored = api.client.post("/files", files={"file": ("part.gcode", GCODE)})
    assert stored.status_code == 201, stored.text
    return api, str(stored.json()["id"])


def spread_over_every_node(cluster: Cluster) -> dict[str, list[str]]:
    """Wait until the 30 printers are driven, 10 by each node; check each printer's view."""
    viewer = cluster.nodes[0]

    def spread() -> dict[str, list[str]] | None:
        shards = driving(viewer)
        sizes = sorted(len(p) for p in shards.values())
        return shards if sizes == [10, 10, 10] else None

    shards = wait_for(spread, 120, "30 printers spread 10 per node")
    owner = {p: node for node, printers in shards.items() for p in printers}
    for printer in printers_of(viewer):
        assert printer["driven_by"] == owner[printer["id"]], printer
        assert printer["drive_state"] == "driven" and printer["drive_epoch"] >= 1
    return shards


def submit_jobs(cluster: Cluster, file_id: str, count_: int, weight: int = 7,
                prefix: str = "job") -> None:
    for n in range(count_):
        node = cluster.nodes[n % 3]
        body = {"id": f"{prefix}{n:02d}", "filament_id": SPOOLS[n % 3], "file_id": file_id,
                "print_weight_in_grams": weight}
        created = node.client.post("/print_jobs", json=body,
                                   headers={"Idempotency-Key": f"{prefix}{n:02d}"})
        assert created.status_code == 201, created.text


def running_on(node: ServerProcess, printers: set[str]) -> int:
    return sum(1 for j in jobs_on(node)
               if j["status"] == "Running" and j["assigned_printer_id"] in printers)


def check_every_job_done_once(cluster: Cluster, emulator: Emulator, jobs: int,
                              weight: int = 7) -> None:
    """Every job Done exactly once, started once at the printers, every spool charged once."""
    final = cluster.wait_leader()
    try:
        wait_for(lambda: count(final, "Done") == jobs, 180, f"all {jobs} jobs Done")
    except AssertionError:
        waiting = [(j["id"], j["status"], j["phase"], j["assigned_printer_id"], j["hold"])
                   for j in jobs_on(final) if j["status"] != "Done"]
        views = {p["id"]: (p["driven_by"], p["drive_state"]) for p in printers_of(final)}
        raise AssertionError(f"not Done: {waiting}; printers: {views}; "
                             f"cluster: {final.cluster()}") from None
    for job in jobs_on(final):
        history = final.client.get(f"/print_jobs/{job['id']}/history").json()
        assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"], \
            (job["id"], history)
    per_spool = Counter(SPOOLS[n % 3] for n in range(jobs))
    for spool in SPOOLS:
        data = final.client.get(f"/filaments/{spool}").json()
        assert data["remaining_weight_in_grams"] == 1000 - per_spool[spool] * weight, data
        assert data["reserved_weight_in_grams"] == 0
    starts: Counter[str] = Counter()
    for i in range(PRINTERS):
        status = emulator.status(i)
        assert all(times == 1 for times in status["starts"].values()), status
        starts.update(status["starts"])
    assert starts == Counter({f"mes-job{n:02d}.gcode": 1 for n in range(jobs)})


def test_a_killed_node_loses_its_printers_within_its_lease_and_no_print_starts_twice(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("OctoPrint", count=PRINTERS, job_time=6.0)
    cluster = Cluster(3, tmp_path / "cluster", **SETTINGS)
    try:
        api, file_id = build_farm(cluster, emulator)
        victim = next(n for n in cluster.followers() if n is not api)
        survivor = next(n for n in cluster.nodes if n is not victim)
        # Three printers pinned to the node that will be killed (a follower).
        pinned = {f"e{i:02d}" for i in (27, 28, 29)}
        for printer_id in sorted(pinned):
            changed = api.client.patch(f"/printers/{printer_id}",
                                       json={"hub": victim.raft_address})
            assert changed.status_code == 200 and changed.json()["hub"] == victim.raft_address
        refused = api.client.patch("/printers/e00", json={"hub": "10.9.9.9:7000"})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_hub"
        wait_for(lambda: pinned <= set(driving(api).get(victim.raft_address, [])), 60,
                 "the pinned printers handed over to their hub")
        shards = spread_over_every_node(cluster)
        assert pinned <= set(shards[victim.raft_address])
        lost = set(shards[victim.raft_address])
        jobs = 60
        submit_jobs(cluster, file_id, jobs)
        wait_for(lambda: running_on(survivor, lost - pinned) >= 3, 60,
                 "prints running on the victim's floating printers")

        killed_at = time.monotonic()
        victim.kill()
        others = {n.raft_address for n in cluster.nodes if n is not victim}

        def taken_over() -> dict[str, list[str]] | None:
            now = driving(survivor)
            held = {p for node in others for p in now.get(node, [])}
            return now if lost - pinned <= held else None

        # "Never taken over" fails here. How long after the lease it took is a figure: on a
        # loaded machine the leader's balancing pass and its commits wait for the scheduler.
        after = wait_for(taken_over, LEASE + 60, "the killed node's printers driven again")
        took = time.monotonic() - killed_at
        print(f"\nkilled node's {len(lost - pinned)} floating printers driven by the others "
              f"{took:.2f} s after the kill (lease {LEASE:g} s)")
        assert not after.get(victim.raft_address)
        sizes = sorted(len(after.get(node, [])) for node in others)
        assert sum(sizes) == PRINTERS - len(pinned) and sizes[1] - sizes[0] <= 1, after

        # The pinned printers of the dead hub: unreachable, driven by nobody.
        views = {p["id"]: p for p in printers_of(survivor)}
        for printer_id in pinned:
            assert views[printer_id]["drive_state"] == "unreachable", views[printer_id]
            assert views[printer_id]["driven_by"] is None
        undriven = {p["id"]: p["drive_state"] for p in survivor.cluster()["undriven_printers"]}
        assert undriven == dict.fromkeys(pinned, "unreachable")
        before = {i: emulator.status(i) for i in (27, 28, 29)}
        # An observation window (nothing must happen in it), counted from the takeover: on a
        # loaded machine the takeover itself may have taken all of LEASE + 4 s.
        watched_from = time.monotonic()
        wait_for(lambda: time.monotonic() - max(watched_from, killed_at + LEASE) > 4,
                 LEASE + 10, "a while with the hub down")
        for i in (27, 28, 29):  # no other node reached them meanwhile
            now = emulator.status(i)
            assert {c: n for c, n in now["reads_by"].items() if c != agent(victim)} == {
                c: n for c, n in before[i]["reads_by"].items() if c != agent(victim)}
            assert now["requests"] == before[i]["requests"]

        victim.start()  # back: it renews its lease and drives its pinned printers again
        check_every_job_done_once(cluster, emulator, jobs)
        views = {p["id"]: p for p in printers_of(survivor)}
        assert {views[p]["driven_by"] for p in pinned} == {victim.raft_address}
        cluster.assert_same_state(timeout=60)
    finally:
        cluster.stop()


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_a_node_stopped_past_its_lease_never_acts_on_the_printers_it_lost(
        role: str, tmp_path: Path, start_emulator: StartEmulator) -> None:
    """A stopped leader also loses its leadership: the others elect a new one, which moves
    the stopped node's printers; resumed, the old leader acts on none of them."""
    emulator = start_emulator("OctoPrint", count=PRINTERS, job_time=8.0)
    cluster = Cluster(3, tmp_path / "cluster", **SETTINGS)
    try:
        _, file_id = build_farm(cluster, emulator)
        shards = spread_over_every_node(cluster)
        victim = cluster.followers()[0] if role == "follower" else cluster.wait_leader()
        viewer = next(n for n in cluster.nodes if n is not victim)
        lost = set(shards[victim.raft_address])
        jobs = 45
        submit_jobs(cluster, file_id, jobs)
        wait_for(lambda: running_on(viewer, lost) >= 3, 60,
                 "prints running on the victim's printers")

        assert victim.process is not None
        victim.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            def taken_over() -> bool:
                now = driving(viewer)
                return not now.get(victim.raft_address)

            wait_for(taken_over, LEASE + 60, "the stopped node's printers driven by others")
            taken_at = time.monotonic()
            took = taken_at - stopped_at
            print(f"\nstopped node's printers driven by others after {took:.2f} s")
            # Stay stopped a while longer: the others print on its old printers meanwhile (a
            # window counted from the takeover too, which a loaded machine may delay).
            wait_for(lambda: time.monotonic() - max(taken_at, stopped_at + LEASE) > 3,
                     LEASE + 10, "the stop to outlast the lease")
        finally:
            resumed_at = time.time()
            victim.process.send_signal(signal.SIGCONT)

        check_every_job_done_once(cluster, emulator, jobs)
        # Back with a new lease, it gets a fair share again (handed over by the others).
        wait_for(lambda: len(driving(viewer).get(victim.raft_address, [])) >= 8, 90,
                 "the resumed node to drive printers again")
        views = {p["id"]: p for p in printers_of(viewer)}
        me = agent(victim)
        for i in range(PRINTERS):
            printer = views[f"e{i:02d}"]
            since = (datetime.fromisoformat(printer["driven_since"]).timestamp()
                     if printer["driven_by"] == victim.raft_address else None)
            for request in emulator.status(i)["requests"]:
                if request["client"] != me or request["at"] < resumed_at:
                    continue
                # After it resumed it may act only on printers given to it again since.
                assert since is not None and request["at"] >= since, (printer["id"], request)
            for start in emulator.status(i)["started_by"]:
                if start["client"] == me and start["at"] >= resumed_at:
                    assert since is not None and start["at"] >= since, (printer["id"], start)
        assert "lease lapsed" in victim.log_path.read_text(errors="replace")
        cluster.assert_same_state(timeout=60)
    finally:
        if victim.process is not None and victim.alive:
            victim.process.send_signal(signal.SIGCONT)
        cluster.stop()
