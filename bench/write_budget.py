"""Where one REST write's time goes, step by step, at the leader of a 3-node cluster.

One client POSTs print jobs one after another to the leader of a 3-node loopback cluster
(encrypted Raft transport, every sync in place) whose nodes run bench/traced_node.py: each
write's steps are timestamped in the leader (the command door, apply on the Raft thread,
the outcome's hand-back to the event loop, the job's hold read) and by the client, on the
one monotonic clock of the machine. Prints p50/mean/p90 of each step and of the whole,
and the mean time of each state-machine listener per apply; `--without-opcua` runs it
again with every node's OPC UA server off, to show what the embedded server costs.

    .venv/bin/python bench/write_budget.py [--seconds 8] [--without-opcua]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.raft_write as raft_write  # noqa: E402
from tests.cluster import Cluster  # noqa: E402
from tests.polling import wait_for  # noqa: E402

STEPS = ["sent", "door0", "apply0", "apply1", "resolved", "door1", "hold0", "hold1", "answered"]
NAMES = {
    "sent->door0": "HTTP in: parse, middleware, routing, auth, body, validation",
    "door0->apply0": "command door to apply: Raft append, followers' syncs, commit",
    "apply0->apply1": "apply on the Raft thread (state machine and listeners)",
    "apply1->resolved": "outcome handed back to the event loop",
    "resolved->door1": "outcome checked, index noted",
    "door1->hold0": "route code",
    "hold0->hold1": "the created job's hold read",
    "hold1->answered": "HTTP out: serialisation, headers, send, client",
}


def measure(seconds: float, opcua: bool) -> None:
    """One cluster, one client; print the step table."""
    client_steps: list[tuple[str, float]] = []
    post = raft_write.KeepAliveClient.post_json

    async def timed_post(self: raft_write.KeepAliveClient, path: str,
                         body: dict[str, object]) -> int:
        client_steps.append(("sent", time.perf_counter()))
        status = await post(self, path, body)
        client_steps.append(("answered", time.perf_counter()))
        return status

    raft_write.KeepAliveClient.post_json = timed_post  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        env = {} if opcua else {"OPCUA_MODE": "off"}
        cluster = Cluster(3, Path(tmp), **env)
        for node in cluster.nodes:
            node.command = [sys.executable, str(ROOT / "bench" / "traced_node.py")]
            node.extra_env = {**node.extra_env,  # each its own (the cluster shares one)
                              "MES_TRACE_FILE": str(Path(tmp) / f"trace-{node.index}")}
        try:
            cluster.start()
            leader = cluster.wait_leader()
            wait_for(lambda: all(raft_write.opcua_built(n) for n in cluster.live()), 120,
                     "every node's OPC UA address space built")
            raft_write.seed(leader)
            asyncio.run(raft_write.rest_load(leader, 1, 2, "warm"))
            client_steps.clear()
            began = time.perf_counter()
            run = asyncio.run(raft_write.rest_load(leader, 1, seconds, "budget"))
            trace = Path(tmp) / f"trace-{leader.index}"
            assert leader.process is not None
            os.kill(leader.process.pid, signal.SIGUSR2)
            wait_for(lambda: Path(f"{trace}.listeners").exists(), 10, "the trace written")
            lines = trace.read_text().split()
            listeners = Path(f"{trace}.listeners").read_text().splitlines()
        finally:
            cluster.stop()
            raft_write.KeepAliveClient.post_json = post  # type: ignore[method-assign]
    server = [(lines[i], float(lines[i + 1])) for i in range(0, len(lines), 2)]
    events = sorted([e for e in server if e[1] >= began] + client_steps, key=lambda e: e[1])
    spans: dict[str, list[float]] = {}
    current: dict[str, float] | None = None
    for name, at in events:
        if name == "sent":
            current = {"sent": at}
        elif current is not None:
            current.setdefault(name, at)
            if name == "answered":
                if all(s in current for s in STEPS):
                    for a, b in itertools.pairwise(STEPS):
                        spans.setdefault(f"{a}->{b}", []).append((current[b] - current[a]) * 1e3)
                    spans.setdefault("total", []).append(
                        (current["answered"] - current["sent"]) * 1e3)
                current = None
    title = "with" if opcua else "without"
    print(f"\n{run.line()}   [{title} OPC UA]")
    print(f"{'step':<72} {'p50 ms':>7} {'mean':>7} {'p90':>7}")
    for key, values in spans.items():
        values.sort()
        label = NAMES.get(key, "the whole write, as the client saw it")
        print(f"{label:<72} {values[len(values) // 2]:7.3f} {statistics.mean(values):7.3f}"
              f" {values[int(len(values) * 0.9)]:7.3f}")
    print("state-machine listeners, mean per apply (µs): " + ", ".join(
        f"{line.split(chr(9))[0]} {line.split(chr(9))[1]}" for line in listeners[:6]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of writes")
    parser.add_argument("--without-opcua", action="store_true",
                        help="run again with every node's OPC UA server off")
    args = parser.parse_args()
    measure(args.seconds, opcua=True)
    if args.without_opcua:
        measure(args.seconds, opcua=False)


if __name__ == "__main__":
    main()
