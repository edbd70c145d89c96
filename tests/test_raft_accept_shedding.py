"""Out of descriptors, the Raft port sheds the pending connection (with a descriptor held in
reserve) instead of leaving it in the backlog, where the level-triggered poller would report
it again at once and the Raft thread would spin and log until descriptors came back."""

from __future__ import annotations

import errno
import logging
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest
from pysyncobj.poller import POLL_EVENT_TYPE

from mes.raft import transport


class OutOfDescriptorsOnce:
    """A listening socket whose first accept() fails as a process without descriptors."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures == 0:
            self.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()


def _closed_by_peer(client: socket.socket, deadline: float) -> bool:
    client.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if client.recv(1) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_a_connection_pending_without_descriptors_is_shed_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    transport.install()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(2)]
    try:
        shed_before = transport._RESERVE.shed
        transport._RESERVE.last_warning = 0.0
        server = SimpleNamespace(_TcpServer__socket=OutOfDescriptorsOnce(listener))
        with caplog.at_level(logging.WARNING, logger="mes.raft.transport"):
            for _ in range(2):  # the poller reports the port again: one warning only
                server._TcpServer__socket.failures = 0
                transport._on_new_connection(server, None, POLL_EVENT_TYPE.READ)
        assert transport._RESERVE.shed == shed_before + 2
        assert transport._RESERVE.fd is not None  # held again for the next time
        deadline = time.monotonic() + 10
        assert all(_closed_by_peer(client, deadline) for client in clients)
        warnings = [r for r in caplog.records if "could not accept" in r.getMessage()]
        assert len(warnings) == 1 and "Too many open files" in warnings[0].getMessage()
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing left in the backlog
    finally:
        for client in clients:
            client.close()
        listener.close()
