"""Count the sync system calls of each node of a 3-node cluster during N acknowledged writes.

Needs strace. `.venv/bin/python bench/sync_calls.py [--writes 50]`
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster  # noqa: E402

CALLS = ("msync", "fsync", "fdatasync")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(3, Path(tmp)).start()
        try:
            leader = cluster.wait_leader()
            leader.client.post("/printers", json={"id": "p"})
            leader.client.post("/filaments", json={"id": "f", "type": "PLA", "color": "red",
                                                   "total_weight_in_grams": 100_000})
            outputs = [Path(tmp) / f"strace{n.index}.txt" for n in cluster.nodes]
            tracers = []
            for node, output in zip(cluster.nodes, outputs, strict=True):
                assert node.process is not None
                with output.open("w") as err:
                    tracers.append(subprocess.Popen(
                        ["strace", "-f", "-c", "-e", "trace=" + ",".join(CALLS),
                         "-p", str(node.process.pid)], stderr=err))
            time.sleep(1.0)  # strace attaches
            acknowledged = 0
            for i in range(args.writes):
                body = {"id": f"j{i}", "printer_id": "p", "filament_id": "f",
                        "filepath": "x.gcode", "print_weight_in_grams": 1}
                acknowledged += leader.client.post("/print_jobs", json=body).status_code == 201
            time.sleep(0.5)
            for tracer in tracers:
                tracer.send_signal(signal.SIGINT)
                tracer.wait(10)
            print(f"{acknowledged} acknowledged writes, one client at the leader")
            for node, output in zip(cluster.nodes, outputs, strict=True):
                role = "leader  " if node is leader else "follower"
                rows = [line.split() for line in output.read_text().splitlines()]
                counts = {row[-1]: row[3] for row in rows if row and row[-1] in CALLS}
                print(role, ", ".join(f"{n} {c}" for c, n in counts.items()) or "no sync calls")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
