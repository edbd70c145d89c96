"""Every kind of printer in one farm: emulated OctoPrint, PrusaLink, Moonraker and Duet
printers and a real Klipper printer behind the real Moonraker, driven by a 3-node cluster
whose leader is killed (SIGKILL) mid-print. Every job is Done exactly once, counted at each
emulator and at the real Moonraker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mes.version import DATA_LEVEL
from tests.cluster import Cluster, ServerProcess
from tests.emulators import StartEmulator
from tests.polling import wait_for
from tests.real_moonraker import MoonrakerServer, write_gcode

pytestmark = pytest.mark.cluster

KINDS = ("OctoPrint", "PrusaLink", "Moonraker", "Duet")
PER_KIND = 2
SPOOLS = ("s0", "s1", "s2")
JOBS = 27


def jobs_on(node: ServerProcess) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = node.every("/print_jobs")
    return data


def count(node: ServerProcess, status: str) -> int:
    return sum(1 for j in jobs_on(node) if j["status"] == status)


def test_a_farm_of_every_kind_survives_a_leader_kill(
        tmp_path: Path, start_emulator: StartEmulator, moonraker: MoonrakerServer) -> None:
    emulators = {kind: start_emulator(kind, count=PER_KIND, job_time=2.5) for kind in KINDS}
    cluster = Cluster(3, tmp_path / "cluster", PRINTER_WORKER_INTERVAL="0.3",
                      AUTO_CLEAR_BED="true")
    try:
        cluster.start()
        follower = cluster.followers()[0]
        wait_for(lambda: follower.cluster()["cluster_version"] == DATA_LEVEL, 60,
                 "the cluster version")
        for spool in SPOOLS:
            body = {"id": spool, "type": "PLA", "color": spool, "total_weight_in_grams": 1000}
            assert follower.client.post("/filaments", json=body).status_code == 201
        printers = [{"id": f"{kind.lower()}{i}", "api": kind, "url": emulators[kind].url(i),
                     "api_key": "mockkey"} for kind in KINDS for i in range(PER_KIND)]
        printers.append({"id": "klipper", "api": "Moonraker", "url": moonraker.base_url})
        for n, printer in enumerate(printers):
            body = {**printer, "worker": True, "filament_id": SPOOLS[n % 3]}
            created = follower.client.post("/printers", json=body)
            assert created.status_code == 201, created.text
        # A real print for Klipper (a second or two of its virtual time, so that Moonraker
        # records it in its history); the emulators print for their job time.
        gcode = write_gcode(tmp_path / "part.gcode", 3000).read_bytes()
        stored = follower.client.post("/files", files={"file": ("part.gcode", gcode)})
        assert stored.status_code == 201, stored.text
        for n in range(JOBS):
            node = cluster.nodes[n % 3]
            body = {"id": f"job{n:02d}", "filament_id": SPOOLS[n % 3],
                    "file_id": stored.json()["id"], "print_weight_in_grams": 5}
            created = node.client.post("/print_jobs", json=body,
                                       headers={"Idempotency-Key": f"job{n:02d}"})
            assert created.status_code == 201, created.text

        leader = cluster.wait_leader()
        survivor = next(n for n in cluster.live() if n is not leader)
        wait_for(lambda: count(survivor, "Running") >= 4, 120, "prints running")
        leader.kill()
        assert cluster.wait_leader() is not leader
        leader.start()

        final = cluster.wait_leader()
        wait_for(lambda: count(final, "Done") == JOBS, 240, f"all {JOBS} jobs Done")
        for job in jobs_on(final):
            history = final.client.get(f"/print_jobs/{job['id']}/history").json()
            assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"], \
                (job["id"], history)
        # Counted where the prints happened: each job's file started once, on one printer.
        starts: Counter[str] = Counter()
        kinds_used = set()
        for kind, emulator in emulators.items():
            for i in range(PER_KIND):
                status = emulator.status(i)
                assert all(times == 1 for times in status["starts"].values()), (kind, status)
                starts.update(status["starts"])
                if status["starts"]:
                    kinds_used.add(kind)
        history = moonraker.client.get("/server/history/list", params={"limit": 100})
        history.raise_for_status()
        klipper = Counter(j["filename"] for j in history.json()["result"]["jobs"])
        assert all(times == 1 for times in klipper.values()), klipper
        starts.update(klipper)
        assert starts == Counter({f"mes-job{n:02d}.gcode": 1 for n in range(JOBS)})
        assert kinds_used == set(KINDS) and klipper, (kinds_used, klipper)
        for spool in SPOOLS:
            data = final.client.get(f"/filaments/{spool}").json()
            assert data["remaining_weight_in_grams"] == 1000 - 9 * 5, data
        cluster.assert_same_state(timeout=60)
    finally:
        cluster.stop()
