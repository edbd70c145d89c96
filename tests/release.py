"""Earlier releases from this repository's own history, run as nodes of a test cluster.

`extract_release` writes the tree of a release's commit (`git archive`) into a session tmp
dir once per test session. Without the commit (a shallow clone, a source tarball) it takes
the same tree from the release's vendored tarball (0.1.0 has one); without either the test
is skipped, or fails when CI is "true": CI must run the upgrade tests.

A `ReleaseServerProcess` runs that tree with this interpreter (the test venv: the releases
declare the same dependencies), PYTHONPATH naming the extracted tree and its cwd inside it,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from tests.auth import ADMIN_TOKEN
from tests.cluster import READY_SECONDS, Cluster, ServerProcess
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Release:
    """A release of mes by the commit it was made from."""

    name: str
    commit: str
    # Its tree as a tarball, for a checkout without that history (None: none kept).
    vendored: Path | None = None
    # Settings its nodes need beyond the ones every release reads.
    env: dict[str, str] = field(default_factory=dict)


# `git archive d64c92f mes opcua_model pyproject.toml`, for a checkout without that history.
V0_1_0 = Release("0.1.0", "d64c92f",
                 ROOT / "tests" / "corpus" / "release-0.1.0" / "source.tar.gz")
# The tree issue 19's stop landed as 0.4.0 (CHANGELOG, data level 4).
V0_4_0 = Release("0.4.0", "0808d7e", env={"ALLOW_LOCAL_ADDRESSES": "true"})
# The tree stop 29 landed as 0.5.0 (data level 5: pre-vote).
V0_5_0 = Release("0.5.0", "3f13453", env={"ALLOW_LOCAL_ADDRESSES": "true"})
# The last release: the tree stop 30 landed as 0.6.0 (data level 6: Moonraker, Duet).
V0_6_0 = Release("0.6.0", "65bcd0e", env={"ALLOW_LOCAL_ADDRESSES": "true"})
RELEASE_COMMIT, RELEASE_NAME, VENDORED = V0_1_0.commit, V0_1_0.name, V0_1_0.vendored

# One extracted tree per test session (a process runs one session).
_extracted: dict[str, Path] = {}


def _unavailable(reason: str, release: Release = V0_1_0) -> NoReturn:
    """Skip: the release is not in this checkout; in CI (CI=true) fail instead."""
    message = (f"release {release.name} (commit {release.commit}) is not available: {reason}. "
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
    # 0.1.0 kept its OPC UA model beside mes (`opcua_model`); later releases inside it.
    modules = ["mes", *(["opcua_model"] if (tree / "opcua_model").is_dir() else [])]
    probe = (f"import sys, {', '.join(modules)}; "
             + "".join(f"print({m}.__file__); " for m in modules))
    result = subprocess.run([sys.executable, "-c", probe], env=release_env(tree), cwd=tree,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"the release tree does not import: {result.stderr}"
    for imported in result.stdout.splitlines():
        assert Path(imported).resolve().is_relative_to(tree.resolve()), (
            f"a release node would import {imported}, not the release tree {tree}")


def in_history(release: Release = V0_1_0) -> bool:
    """Whether this checkout's git history holds the release's commit."""
    if shutil.which("git") is None:
        return False
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
         f"{release.commit}^{{commit}}"], capture_output=True, text=True, check=False)
    return found.returncode == 0


def extract_release(tmp_path_factory: pytest.TempPathFactory,
                    release: Release = V0_1_0) -> Path:
    """The tree of a release, extracted once per session (skips or fails without it)."""
    if release.commit in _extracted:
        return _extracted[release.commit]
    tree = tmp_path_factory.mktemp(f"release-{release.name}")
    if not in_history(release):
        # A shallow clone or a source tarball: the same tree, kept beside the corpus
        # (test_vendored_release_is_the_commit checks it against the history when present).
        if release.vendored is None or not release.vendored.is_file():
            _unavailable("the commit is not in this repository's history and no copy of "
                         "its tree is kept", release)
        with tarfile.open(release.vendored) as vendored:
            vendored.extractall(tree, filter="data")
        _check_imports_release(tree)
        _extracted[release.commit] = tree
        return tree
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "--format=tar",
                                release.commit], stdout=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout,
                           capture_output=True, check=False)
    archive.stdout.close()
    assert archive.wait(60) == 0, f"git archive {release.commit} failed"
    assert untar.returncode == 0, f"tar -x failed: {untar.stderr!r}"
    assert (tree / "mes" / "__main__.py").is_file(), f"no mes package in {tree}"
    _check_imports_release(tree)
    _extracted[release.commit] = tree
    return tree


class ReleaseServerProcess(ServerProcess):
    """A node that runs an earlier release until `upgrade()`, then the current code."""

    release: Path | None
    of: Release  # which release `release` is the tree of
    history: list[str]  # what each start ran: "0.1.0" (the release's name) or "current"
    exits: list[int | None]  # the exit status of each stop by upgrade()

    @classmethod
    def adopt(cls, node: ServerProcess, release: Path,
              of: Release = V0_1_0) -> ReleaseServerProcess:
        """The same node (ports, DATA_DIR, client), run on the release until upgraded."""
        adopted = cls.__new__(cls)
        adopted.__dict__.update(node.__dict__)
        adopted.release = release
        adopted.of = of
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
        self.history.append(self.of.name)
        # As ServerProcess.start, with the release's PYTHONPATH and cwd (its tree).
        env = {**release_env(self.release),
               "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(self.http_port),
               "RAFT_SELF": self.raft_address, "RAFT_PEERS": ",".join(self.peers),
               "OPCUA_ENDPOINT": self.opcua_url,
               "DATA_DIR": str(self.data_dir), "UPLOAD_PATH": str(self.data_dir / "upload"),
               "LOG_LEVEL": "WARNING", "MES_ADMIN_TOKEN": ADMIN_TOKEN, **self.of.env,
               **self.extra_env}
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- starting release {self.of.name} from {self.release}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, env=env, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.release)
        self.wait_answering(f"node {self.index} (release {self.of.name}) to answer")
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
    """A `Cluster` whose nodes start on an earlier release (0.1.0 unless `of` says)."""

    nodes: list[ReleaseServerProcess]  # type: ignore[assignment]

    def __init__(self, size: int, base: Path, release: Path, *, of: Release = V0_1_0,
                 **env: str) -> None:
        super().__init__(size, base, **env)
        self.nodes = [ReleaseServerProcess.adopt(node, release, of) for node in self.nodes]
