"""Release 0.1.0 from this repository's own history, run as a node of a test cluster.

`extract_release` writes the tree of commit RELEASE_COMMIT (`git archive`) into a session
tmp dir once per test session. Without the commit (a shallow clone, a source tarball) it
takes the same tree from VENDORED; without either the test is skipped, or fails when CI is
"true": CI must run the upgrade test.

A `ReleaseServerProcess` runs that tree with this interpreter (the test venv: 0.1.0
declares the same dependencies), PYTHONPATH naming the extracted tree and its cwd inside it,
so `import mes` imports the old code (checked once per session). `upgrade()` stops it
(SIGTERM) and starts the same DATA_DIR and ports on the current code (the plain
`ServerProcess` command, without PYTHONPATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import NoReturn

import pytest

from tests.auth import ADMIN_TOKEN
from tests.cluster import READY_SECONDS, Cluster, ServerProcess
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[1]
RELEASE_COMMIT = "d64c92f"
RELEASE_NAME = "0.1.0"
# `git archive d64c92f mes opcua_model pyproject.toml`, for a checkout without that history.
VENDORED = ROOT / "tests" / "corpus" / "release-0.1.0" / "source.tar.gz"

# One extracted tree per test session (a process runs one session).
_extracted: dict[str, Path] = {}


def _unavailable(reason: str) -> NoReturn:
    """Skip: the release is not in this checkout; in CI (CI=true) fail instead."""
    message = (f"release {RELEASE_NAME} (commit {RELEASE_COMMIT}) is not available: {reason}. "
               "The upgrade test needs the repository's full history "
               "(fetch-depth: 0, or `git fetch --unshallow`)")
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def release_env(tree: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that must import the release's `mes`: PYTHONPATH names
    the extracted tree first (before the venv's editable install of the current code)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.pop("PYTHONHOME", None)
    return env


def _check_imports_release(tree: Path) -> None:
    """`import mes` (and `opcua_model`) in a process set up as a release node must import
    the extracted tree, not the current code."""
    probe = ("import mes, opcua_model, sys; "
             "print(mes.__file__); print(opcua_model.__file__); print(sys.executable)")
    result = subprocess.run([sys.executable, "-c", probe], env=release_env(tree), cwd=tree,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"the release tree does not import: {result.stderr}"
    mes_file, model_file, _ = result.stdout.splitlines()
    for imported in (mes_file, model_file):
        assert Path(imported).resolve().is_relative_to(tree.resolve()), (
            f"a release node would import {imported}, not the release tree {tree}")


def in_history() -> bool:
    """Whether this checkout's git history holds the release's commit."""
    if shutil.which("git") is None:
        return False
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
         f"{RELEASE_COMMIT}^{{commit}}"], capture_output=True, text=True, check=False)
    return found.returncode == 0


def extract_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree of release 0.1.0, extracted once per session (skips or fails without it)."""
    if RELEASE_COMMIT in _extracted:
        return _extracted[RELEASE_COMMIT]
    tree = tmp_path_factory.mktemp(f"release-{RELEASE_NAME}")
    if not in_history():
        # A shallow clone or a source tarball: the same tree, kept beside the corpus
        # (test_vendored_release_is_the_commit checks it against the history when present).
        if not VENDORED.is_file():
            _unavailable("the commit is not in this repository's history and "
                         f"{VENDORED} is missing")
        with tarfile.open(VENDORED) as vendored:
            vendored.extractall(tree, filter="data")
        _check_imports_release(tree)
        _extracted[RELEASE_COMMIT] = tree
        return tree
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "--format=tar",
                                RELEASE_COMMIT], stdout=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout,
                           capture_output=True, check=False)
    archive.stdout.close()
    assert archive.wait(60) == 0, f"git archive {RELEASE_COMMIT} failed"
    assert untar.returncode == 0, f"tar -x failed: {untar.stderr!r}"
    assert (tree / "mes" / "__main__.py").is_file(), f"no mes package in {tree}"
    _check_imports_release(tree)
    _extracted[RELEASE_COMMIT] = tree
    return tree


class ReleaseServerProcess(ServerProcess):
    """A node that runs release 0.1.0 until `upgrade()`, then the current code."""

    release: Path | None
    history: list[str]  # what each start ran: "0.1.0" or "current"
    exits: list[int | None]  # the exit status of each stop by upgrade()

    @classmethod
    def adopt(cls, node: ServerProcess, release: Path) -> ReleaseServerProcess:
        """The same node (ports, DATA_DIR, client), run on the release until upgraded."""
        adopted = cls.__new__(cls)
        adopted.__dict__.update(node.__dict__)
        adopted.release = release
        adopted.history = []
        adopted.exits = []
        return adopted

    @property
    def upgraded(self) -> bool:
        return self.release is None

    def start(self) -> None:
        if self.release is None:
            self.history.append("current")
            super().start()
            return
        self.history.append(RELEASE_NAME)
        # As ServerProcess.start, with the release's PYTHONPATH and cwd (its tree).
        env = {**release_env(self.release),
               "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(self.http_port),
               "RAFT_SELF": self.raft_address, "RAFT_PEERS": ",".join(self.peers),
               "OPCUA_ENDPOINT": self.opcua_url,
               "DATA_DIR": str(self.data_dir), "UPLOAD_PATH": str(self.data_dir / "upload"),
               "LOG_LEVEL": "WARNING", "MES_ADMIN_TOKEN": ADMIN_TOKEN, **self.extra_env}
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- starting release {RELEASE_NAME} from {self.release}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, env=env, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.release)
        self.wait_answering(f"node {self.index} (release {RELEASE_NAME}) to answer")
        # The process runs in the release's tree (what `python -m mes` imports first).
        cwd = Path(f"/proc/{self.process.pid}/cwd")
        if cwd.exists():
            assert cwd.resolve() == self.release.resolve(), cwd.resolve()

    def upgrade(self, ready_timeout: float = READY_SECONDS) -> None:
        """SIGTERM, then the same DATA_DIR and ports on the current code; wait for ready."""
        self.stop()
        assert self.process is not None and self.process.returncode is not None
        self.exits.append(self.process.returncode)
        with self.log_path.open("ab") as log:
            log.write(f"--- stopped (exit {self.process.returncode}); starting the current "
                      "code\n".encode())
        self.release = None
        self.start()
        wait_for(self.healthy, ready_timeout, f"upgraded node {self.index} to be ready")


class ReleaseCluster(Cluster):
    """A `Cluster` whose nodes start on release 0.1.0."""

    nodes: list[ReleaseServerProcess]  # type: ignore[assignment]

    def __init__(self, size: int, base: Path, release: Path, **env: str) -> None:
        super().__init__(size, base, **env)
        self.nodes = [ReleaseServerProcess.adopt(node, release) for node in self.nodes]
