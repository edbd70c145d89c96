"""The in-memory database (a scratch file in DATA_DIR, so that reads get their own
connections) is removed when the server exits cleanly, on SIGTERM (docker stop, systemd)
and on SIGINT (Ctrl-C), as the configuration docs say."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cluster import ServerProcess
from tests.polling import wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_clean_exit_removes_the_scratch_database(tmp_path: Path, sig: signal.Signals) -> None:
    node = ServerProcess(0, tmp_path, {})
    node.data_dir.mkdir(parents=True)
    try:
        node.start()
        wait_for(node.healthy, 90, "the node to be ready")
        assert (node.data_dir / "applied-state.sqlite").is_file()
        assert node.process is not None
        node.process.send_signal(sig)
        assert node.process.wait(30) == 0, node.log_tail()
        left = sorted(p.name for p in node.data_dir.iterdir() if p.name.startswith("applied"))
        assert left == []
        assert (node.data_dir / "raft.journal").is_file()  # the facts stay
    finally:
        node.stop()
        node.client.close()
