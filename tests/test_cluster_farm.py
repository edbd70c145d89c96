"""Emulated printers in a 3-node cluster of real processes, with the leader killed twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, ServerProcess
from tests.emulators import StartEmulator
from tests.farm_helpers import GCODE
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

PRINTERS = 10
JOBS = 30
SPOOLS = ("s0", "s1", "s2")


def jobs_on(node: ServerProcess) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = node.every("/print_jobs")
    return data


def count(node: ServerProcess, status: str) -> int:
    return sum(1 for j in jobs_on(node) if j["status"] == status)


def kill_leader_while_printing(cluster: Cluster, done_before: int) -> None:
    """Wait until prints run, SIGKILL the leader, and bring it back as a follower."""
    leader = cluster.wait_leader()
    survivor = next(n for n in cluster.live() if n is not leader)
    wait_for(lambda: count(survivor, "Running") >= 3 and count(survivor, "Done") >= done_before,
             120, "prints running on the emulated printers")
    leader.kill()
    new_leader = cluster.wait_leader()
    assert new_leader is not leader
    leader.start()


def test_emulated_farm_survives_two_leader_kills(tmp_path: Path,
                                                 start_emulator: StartEmulator) -> None:
    emulator = start_emulator("OctoPrint", count=PRINTERS, job_time=2.5)
    cluster = Cluster(3, tmp_path / "cluster", PRINTER_WORKER_INTERVAL="0.3",
                      AUTO_CLEAR_BED="true")
    try:
        cluster.start()
        follower = cluster.followers()[0]
        for spool in SPOOLS:
            body = {"id": spool, "type": "PLA", "color": spool, "total_weight_in_grams": 1000}
            assert follower.client.post("/filaments", json=body).status_code == 201
        for i in range(PRINTERS):
            body = {"id": f"e{i}", "api": "OctoPrint", "url": emulator.url(i),
                    "api_key": "mockkey", "worker": True, "filament_id": SPOOLS[i % 3]}
            assert follower.client.post("/printers", json=body).status_code == 201
        stored = follower.client.post("/files", files={"file": ("part.gcode", GCODE)})
        assert stored.status_code == 201, stored.text
        file_id = stored.json()["id"]
        for n in range(JOBS):
            node = cluster.nodes[n % 3]
            body = {"id": f"job{n:02d}", "filament_id": SPOOLS[n % 3], "file_id": file_id,
                    "print_weight_in_grams": 7}
            created = node.client.post("/print_jobs", json=body,
                                       headers={"Idempotency-Key": f"job{n:02d}"})
            assert created.status_code == 201, created.text

        kill_leader_while_printing(cluster, done_before=0)
        kill_leader_while_printing(cluster, done_before=5)

        final = cluster.wait_leader()
        wait_for(lambda: count(final, "Done") == JOBS, 180, f"all {JOBS} jobs Done")
        for node in cluster.nodes:
            wait_for(lambda n=node: count(n, "Done") == JOBS, 60,  # type: ignore[misc]
                     f"node {node.index} to see every job Done")
        for job in jobs_on(final):
            history = final.client.get(f"/print_jobs/{job['id']}/history").json()
            statuses = [h["to_status"] for h in history]
            assert statuses.count("Done") == 1, (job["id"], statuses)
            assert statuses == ["Queued", "Running", "Done"], (job["id"], history)
        for spool in SPOOLS:
            data = final.client.get(f"/filaments/{spool}").json()
            assert data["remaining_weight_in_grams"] == 1000 - 10 * 7, data
            assert data["reserved_weight_in_grams"] == 0
        starts: Counter[str] = Counter()
        for i in range(PRINTERS):
            status = emulator.status(i)
            assert all(times == 1 for times in status["starts"].values()), status
            starts.update(status["starts"])
        assert starts == Counter({f"mes-job{n:02d}.gcode": 1 for n in range(JOBS)})
        cluster.assert_same_state(timeout=60)
    finally:
        cluster.stop()
