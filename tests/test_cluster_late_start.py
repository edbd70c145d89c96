"""A killed node's start, delivered late, never prints a job twice in a real cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.emulators import StartEmulator
from tests.farm_helpers import GCODE
from tests.late_proxy import LateProxy, ProxyThread, starts_a_print
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

# The issue held the start 25 s against a 15 s grace; here the grace is 1.5 s and the start
# is held until the job is Done under the printer's new driver (a fixed delay would race
# the takeover on a loaded machine). DELAY only bounds the hold if the test fails first.
DELAY = 600.0


def test_a_killed_drivers_start_delivered_late_is_harmless(
        tmp_path: Path, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("OctoPrint", job_time=1.0, heat_time=2.0)
    cluster = Cluster(3, tmp_path / "cluster", PRINTER_WORKER_INTERVAL="0.3",
                      PRINTER_START_GRACE="1.5", AUTO_CLEAR_BED="true",
                      NODE_LEASE_SECONDS="4", NODE_LEASE_RENEW="1")
    with ProxyThread(LateProxy(emulator.port, starts_a_print, delay=DELAY)) as proxy:
        try:
            cluster.start()
            follower = cluster.followers()[0]
            spool = {"id": "s", "type": "PLA", "color": "red", "total_weight_in_grams": 1000}
            assert follower.client.post("/filaments", json=spool).status_code == 201
            printer = {"id": "e0", "api": "OctoPrint", "url": proxy.url, "api_key": "mockkey",
                       "worker": True, "filament_id": "s"}
            assert follower.client.post("/printers", json=printer).status_code == 201
            stored = follower.client.post("/files", files={"file": ("part.gcode", GCODE)})
            assert stored.status_code == 201, stored.text
            job = {"id": "j", "filament_id": "s", "file_id": stored.json()["id"],
                   "print_weight_in_grams": 7}
            assert follower.client.post("/print_jobs", json=job).status_code == 201

            wait_for(lambda: proxy.held, 120, "the driving node's start held by the proxy")
            address = follower.client.get("/printers/e0").json()["driven_by"]
            driver = next(n for n in cluster.nodes if n.raft_address == address)
            driver.kill()  # it loses the printer with its start on the way
            other = next(n for n in cluster.live())
            cluster.wait_leader()

            def done() -> bool:
                return bool(other.client.get("/print_jobs/j").json()["status"] == "Done")

            wait_for(done, 120, "the job Done under the printer's new driver")
            now = other.client.get("/printers/e0").json()["driven_by"]
            assert now is not None and now != address
            proxy.release()  # the killed node's start arrives only now
            wait_for(proxy.delivered, 60, "the killed node's start delivered")
            wait_for(lambda: emulator.status(0)["phase"] != "PRINTING", 60, "the printer idle")
            status = emulator.status(0)
            assert status["starts"] == {"mes-j.gcode": 1}, (status, proxy.late_answers)
            assert status["moved"] == {"mes-j.gcode": 1}
            assert proxy.late_answers[0].split()[1] in (b"404", b"409"), proxy.late_answers
            history = other.client.get("/print_jobs/j/history").json()
            assert [h["to_status"] for h in history] == ["Queued", "Running", "Done"]
        finally:
            cluster.stop()
