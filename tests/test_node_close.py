"""A node closed in-process gives back every descriptor it opened (a test process, or an
embedding program, creates many nodes; a leak broke select() late in a long run)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mes.config import Settings
from mes.node import FarmNode
from tests.ports import free_port


def open_descriptors() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the directory's own descriptor, closed by now
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


def test_closing_a_node_closes_its_pipes_sockets_and_files(tmp_path: Path) -> None:
    for round_ in range(3):
        before = open_descriptors()
        node = FarmNode(Settings(_env_file=None,  # type: ignore[call-arg]
                                 data_dir=tmp_path / f"data{round_}",
                                 upload_path=tmp_path / f"upload{round_}",
                                 raft_self=f"127.0.0.1:{free_port()}"))
        opened = set(open_descriptors()) - set(before)
        assert any("pipe" in open_descriptors().get(fd, "") for fd in opened)
        node.close()
        left = {fd: target for fd, target in open_descriptors().items() if fd not in before}
        assert left == {}
