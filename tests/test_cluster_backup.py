"""A printing 3-node farm backed up over REST and restored on a fresh 3-node cluster: the
same facts, prints that were running finish once, the same digest on every node."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.auth import bearer
from tests.cluster import Cluster, ServerProcess
from tests.emulators import StartEmulator
from tests.farm_helpers import GCODE
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

PRINTERS = 6
JOBS = 9
SPOOLS = ("s0", "s1", "s2")
SETTINGS = {"PRINTER_WORKER_INTERVAL": "0.3", "AUTO_CLEAR_BED": "true",
            "NODE_LEASE_SECONDS": "5", "NODE_LEASE_RENEW": "1",
            "SHARD_BALANCE_INTERVAL": "0.3"}


def jobs_on(node: ServerProcess) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in node.every("/print_jobs")}


def histories(node: ServerProcess, job_ids: list[str]) -> dict[str, Any]:
    return {job_id: node.client.get(f"/print_jobs/{job_id}/history").json()
            for job_id in job_ids}


def restore_into(node: ServerProcess, archive: Path) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAFT_")},
           **node.extra_env, "DATA_DIR": str(node.data_dir),
           "UPLOAD_PATH": str(node.data_dir / "upload"),
           "RAFT_SELF": node.raft_address, "RAFT_PEERS": ",".join(node.peers)}
    result = subprocess.run([str(Path(sys.executable).parent / "restore"), str(archive)],
                            capture_output=True, text=True, timeout=300, env=env,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def build_and_print(cluster: Cluster, emulator_urls: list[str]) -> tuple[ServerProcess, str]:
    """Spools, printers, a user with a token, jobs; returns a follower and the user's token."""
    api = cluster.followers()[0]
    for spool in (*SPOOLS, "unloaded"):
        body = {"id": spool, "type": "PLA", "color": spool, "total_weight_in_grams": 1000}
        assert api.client.post("/filaments", json=body).status_code == 201
    for i, url in enumerate(emulator_urls):
        body = {"id": f"e{i}", "api": "OctoPrint", "url": url, "api_key": "mockkey",
                "worker": True, "filament_id": SPOOLS[i % 3]}
        assert api.client.post("/printers", json=body).status_code == 201
    assert api.client.post("/users", json={"id": "ada", "name": "Ada", "role": "user"}
                           ).status_code == 201
    token = api.client.post("/tokens", json={"name": "lab", "user_id": "ada"}).json()["token"]
    # the user uploads the file their jobs print: since level 4 a user prints only their own
    stored = api.client.post("/files", files={"file": ("part.gcode", GCODE)},
                             headers={**bearer(token)})
    assert stored.status_code == 201, stored.text
    file_id = stored.json()["id"]
    for n in range(JOBS):
        body = {"id": f"job{n:02d}", "filament_id": SPOOLS[n % 3], "file_id": file_id,
                "print_weight_in_grams": 7}
        created = cluster.nodes[n % 3].client.post("/print_jobs", json=body,
                                                   headers={**bearer(token)})
        assert created.status_code == 201, created.text
    # a job no printer can take (its spool is loaded nowhere): Queued before and after
    waiting = {"id": "waits", "filament_id": "unloaded", "file_id": file_id,
               "print_weight_in_grams": 5}
    assert api.client.post("/print_jobs", json=waiting).status_code == 201
    return api, token


def test_a_printing_farm_restored_on_a_new_cluster_keeps_every_fact(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("OctoPrint", count=PRINTERS, job_time=4.0)
    source = Cluster(3, tmp_path / "source", **SETTINGS)
    target = Cluster(3, tmp_path / "target", **SETTINGS)
    try:
        source.start()
        api, token = build_and_print(source, [emulator.url(i) for i in range(PRINTERS)])

        def printing_and_nothing_left_to_start() -> dict[str, dict[str, Any]] | None:
            jobs = jobs_on(api)
            statuses = Counter(j["status"] for j in jobs.values())
            ours = [j for j in jobs.values() if j["id"] != "waits"]
            if (statuses["Done"] >= 3 and statuses["Running"] >= 1
                    and all(j["status"] != "Queued" for j in ours)):
                return jobs
            return None

        wait_for(printing_and_nothing_left_to_start, 120, "prints Done and Running, none left")
        response = api.client.get("/cluster/backup", timeout=300)
        assert response.status_code == 200, response.text
        index = int(response.headers["X-Backup-Raft-Index"])
        archive = tmp_path / "farm.tar"
        archive.write_bytes(response.content)
        # What the farm showed at the backup: jobs Done by then keep all of it.
        at_backup = jobs_on(api)
        done = sorted(j for j, job in at_backup.items() if job["status"] == "Done")
        running = sorted(j for j, job in at_backup.items() if job["status"] == "Running")
        done_history = histories(api, done)
        for node in source.nodes:
            node.kill()  # the site is lost

        for node in target.nodes:
            assert f"Raft index {index}" in restore_into(node, archive)
        target.start()
        reader = target.nodes[2]
        restored = jobs_on(reader)
        assert set(restored) == set(at_backup)
        for job_id in done:
            assert restored[job_id] == at_backup[job_id]
        assert histories(reader, done) == done_history
        assert restored["waits"]["status"] == "Queued"
        # the user's token signs in on the new cluster
        mine = reader.client.get("/print_jobs/job00", headers=bearer(token))
        assert mine.status_code == 200, mine.text

        # prints that were running at the backup finish, each once
        final = target.wait_leader()
        wait_for(lambda: all(jobs_on(final)[j]["status"] == "Done" for j in running), 120,
                 "the prints running at the backup to finish on the new cluster")
        jobs = jobs_on(final)
        for job_id in [j for j in jobs if j != "waits"]:
            history = final.client.get(f"/print_jobs/{job_id}/history").json()
            assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"], history
        for spool in SPOOLS:
            data = final.client.get(f"/filaments/{spool}").json()
            charged = sum(7 for j in jobs.values() if j["filament_id"] == spool)
            assert data["remaining_weight_in_grams"] == 1000 - charged, data
        starts: Counter[str] = Counter()
        for i in range(PRINTERS):
            starts.update(emulator.status(i)["starts"])
        assert starts == Counter({f"mes-job{n:02d}.gcode": 1 for n in range(JOBS)})
        target.assert_same_state(timeout=60)
    finally:
        source.stop()
        target.stop()
