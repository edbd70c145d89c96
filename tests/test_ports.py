"""The ports tests give their servers: outside the kernel's ephemeral range (a client
polling such a port can connect to itself and hold it), never the same twice."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.ports import free_port, free_ports


def ephemeral_range() -> tuple[int, int]:
    text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(text[0]), int(text[1])


def test_ports_are_outside_the_ephemeral_range_and_never_repeated() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(300)]
    first = free_ports(5)
    ports.extend(range(first, first + 5))
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]


def test_a_port_handed_out_can_be_listened_on() -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, _ = server.accept()
            conn.close()
