"""`setting` and `server` on good and bad configuration (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mes.config import ConfigError, load_settings


def run(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = f"from mes.cli import {script}; {script}()"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("RAFT_", "DATA_", "CLUSTER_"))}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_setting_prints_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RAFT_PEERS=127.0.0.1:7001, 127.0.0.1:7002\n"
                                   "CLUSTER_SECRET=s3cret-Of-The-Cluster-42\n")
    result = run("setting", {"DATABASE_URL": "sqlite+aiosqlite://farm:hunter2@db/x"}, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert lines["RAFT_PEERS"] == "127.0.0.1:7001,127.0.0.1:7002"  # from .env
    assert lines["DATABASE_URL"] == "sqlite+aiosqlite://farm:***@db/x"
    assert lines["OPCUA_SERVER_URL"] == "opc.tcp://mock-server:4840"
    assert "hunter2" not in result.stdout
    assert lines["CLUSTER_SECRET"] == "***"
    assert "s3cret-Of-The-Cluster-42" not in result.stdout


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"OPCUA_SERVER_URL": "http://example"}, "OPCUA_SERVER_URL"),
        ({"RAFT_PEERS": "127.0.0.1:7001,nonsense"}, "RAFT_PEERS"),
        ({"RAFT_PEERS": "127.0.0.1:7001", "CLUSTER_SECRET": ""}, "CLUSTER_SECRET"),
        ({"CLUSTER_SECRET": "too-short"}, "CLUSTER_SECRET"),
        ({"RAFT_SELF": "127.0.0.1:99999"}, "RAFT_SELF"),
        ({"DATABASE_URL": "postgresql://x/y"}, "DATABASE_URL"),
        ({"HTTP_PORT": "eighty"}, "HTTP_PORT"),
        ({"PRINTER_NETWORKS": "10.0.0.0/8,10.1.2.0/33"}, "PRINTER_NETWORKS"),
        ({"DATA_DIR": "/proc/mes-data"}, "DATA_DIR"),
        ({"OPCUA_MODE": "mock"}, "OPCUA_MODE"),
        # two listeners on one port: the Raft transport would read HTTP as frames
        ({"HTTP_PORT": "7123", "RAFT_SELF": "127.0.0.1:7123"}, "HTTP_PORT and RAFT_SELF"),
        ({"HTTP_PORT": "7124", "RAFT_BIND": "0.0.0.0:7124"}, "HTTP_PORT and RAFT_BIND"),
        ({"OPCUA_MODE": "external"}, "OPCUA_SERVER_URL"),
    ],
)
@pytest.mark.parametrize("script", ["setting", "server"])
def test_bad_configuration_exits_2_with_one_line(tmp_path: Path, env: dict[str, str],
                                                 mentions: str, script: str) -> None:
    result = run(script, env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert mentions in lines[0]
    assert "Traceback" not in result.stderr


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="DATA_DIR"):
        load_settings(_env_file=None, data_dir=blocker)
