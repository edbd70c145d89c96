"""Starting a node: --help and --version start nothing; a taken port stops the node at once;
the Raft port listens where RAFT_SELF says."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.ports import free_port

SCRIPTS = ["server", "setting", "mock-printer", "backup", "restore"]
PROJECT_VERSION = tomllib.loads(
    (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAFT_", "HTTP_"))}
    return {**clean, "DATA_DIR": str(tmp_path / "data"), "UPLOAD_PATH": str(tmp_path / "up"),
            "HTTP_HOST": "127.0.0.1", **extra}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_every_script_answers_help_and_version_without_starting(
        tmp_path: Path, script: str, flag: str) -> None:
    http_port = free_port()
    result = subprocess.run([_script(script), flag], capture_output=True, text=True, timeout=120,
                            env=_env(tmp_path, HTTP_PORT=str(http_port)), cwd=tmp_path,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    if flag == "--help":
        assert result.stdout.startswith(f"usage: {script}")
        assert "=" not in result.stdout.split("\n", 1)[0]  # not the settings listing
    else:
        assert result.stdout.strip() == f"{script} {PROJECT_VERSION}"
    assert not (tmp_path / "data").exists()  # nothing started, nothing written


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


@pytest.mark.parametrize("which", ["raft", "http", "opc ua"])
def test_a_taken_port_stops_the_node_with_one_line(tmp_path: Path, taken_port: int,
                                                   which: str) -> None:
    ports = {"raft": free_port(), "http": free_port(), "opc ua": free_port()}
    ports[which] = taken_port
    env = _env(tmp_path, RAFT_SELF=f"127.0.0.1:{ports['raft']}", HTTP_PORT=str(ports["http"]),
               OPCUA_ENABLED="true", OPCUA_ENDPOINT=f"opc.tcp://127.0.0.1:{ports['opc ua']}/mes/")
    started = time.monotonic()
    # "Retries the bind for ever" fails at the timeout; a few quick retries then exit 2 is
    # the behaviour (starting the interpreter dominates, and a loaded machine slows it).
    result = subprocess.run([_script("server")], capture_output=True, text=True, timeout=120,
                            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    print(f"\nthe node stopped {time.monotonic() - started:.1f} s after it was started")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(taken_port) in lines[0] and which.upper() in lines[0].upper()


def _listening(port: int) -> set[str]:
    """The local addresses listening on `port` (IPv4), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_the_raft_port_listens_where_raft_self_says(tmp_path: Path) -> None:
    cluster = Cluster(1, tmp_path / "one").start()
    try:
        port = int(cluster.nodes[0].raft_address.rsplit(":", 1)[1])
        assert _listening(port) == {"127.0.0.1"}
    finally:
        cluster.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_node_cleanly_and_removes_its_scratch_database(
        tmp_path: Path, sig: int) -> None:
    cluster = Cluster(1, tmp_path / "one").start()
    node = cluster.nodes[0]
    try:
        assert (node.data_dir / "applied-state.sqlite").exists()
        assert node.process is not None
        node.process.send_signal(sig)
        assert node.process.wait(30) == 0, node.log_tail()
        leftovers = sorted(p.name for p in node.data_dir.glob("applied-state.sqlite*"))
        assert leftovers == [], leftovers
        assert (node.data_dir / "raft.journal").exists()
    finally:
        cluster.stop()


def test_the_data_and_upload_directories_are_the_nodes_alone(tmp_path: Path) -> None:
    from tests.farm_helpers import GCODE

    cluster = Cluster(1, tmp_path / "one").start()
    node = cluster.nodes[0]
    try:
        stored = node.client.post("/files", files={"file": ("part.gcode", GCODE)})
        assert stored.status_code == 201, stored.text
        upload = node.data_dir / "upload"
        for directory in (node.data_dir, upload):
            assert directory.stat().st_mode & 0o777 == 0o700, directory
        files = [p for p in (*node.data_dir.iterdir(), *upload.rglob("*")) if p.is_file()]
        names = {p.name for p in files}
        assert {"raft.journal", "raft.key", "mes-version.json", stored.json()["id"]} <= names
        loose = {p.name: oct(p.stat().st_mode & 0o777) for p in files
                 if p.stat().st_mode & 0o077}
        assert loose == {}, loose
    finally:
        cluster.stop()


@pytest.mark.parametrize("after", [0.0, 0.5, 1.5])
def test_a_node_stopped_while_opcua_starts_says_where_it_listened_and_logs_no_error(
        tmp_path: Path, after: float) -> None:
    from tests.cluster import ServerProcess

    node = ServerProcess(0, tmp_path, {"OPCUA_ENABLED": "true", "LOG_LEVEL": "INFO"})
    node.data_dir.mkdir(parents=True)
    try:
        node.start()  # returns once /health/live answers: the OPC UA server is starting
        time.sleep(after)  # not synchronisation: where in the start the signal lands
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(60) == 0, node.log_tail()
    finally:
        node.stop()
    log = node.log_path.read_text()
    bad = [line for line in log.splitlines()
           if " ERROR " in line or "Traceback" in line or "never awaited" in line
           or "destroyed but it is pending" in line]
    assert bad == [], log[-3000:]
    base = f"http://127.0.0.1:{node.http_port}"
    assert f"REST API at {base}/api/v1" in log, log[-3000:]
    assert f"web page at {base}/" in log
