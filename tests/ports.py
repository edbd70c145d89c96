"""Free loopback ports for servers started by tests.

Chosen below Linux's ephemeral range (32768-60999), never inside it: a client polling a
port in that range while nothing listens there can be given that very port as its own end
and connect to itself (TCP self-connect), which then answers its own request with garbage
("Server disconnected without sending a response") and holds the port so that the server
meant to listen there cannot bind. Ports handed out are not handed out again in this
process; with pytest-xdist each worker draws from its own slice.
"""

from __future__ import annotations

import os
import random
import socket

LOW, HIGH = 10_000, 32_000
_handed: set[int] = set()


def _slice() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    span = (HIGH - LOW) // max(count, 1)
    first = LOW + (index % max(count, 1)) * span
    return first, first + span


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports nothing listens on now, not handed
    out before in this process."""
    low, high = _slice()
    for _ in range(2000):
        first = random.randrange(low, high - count)
        run = range(first, first + count)
        if any(p in _handed for p in run) or not all(_bindable(p) for p in run):
            continue
        _handed.update(run)
        if len(_handed) > (high - low) // 2:  # a long session: start over (keep this run)
            _handed.intersection_update(run)
        return first
    raise RuntimeError(f"no {count} consecutive free ports in {low}-{high}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)
