"""Console scripts `backup` (fetch a backup from a running node) and `restore` (seed a new
node's DATA_DIR and UPLOAD_PATH from one)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import httpx

from mes.backup import BackupError, read_backup, seed_data_dir
from mes.cli import fail, settings_or_exit
from mes.data_version import check_and_mark
from mes.files.store import BlobStore
from mes.private_dirs import make_private, private_files
from mes.state.errors import NewerData
from mes.version import EXIT_NEWER_DATA, package_version

EXIT_FAILED = 1


def _fail(message: str, status: int = EXIT_FAILED) -> SystemExit:
    """As `mes.cli.fail`, with exit status 1 unless told otherwise."""
    return fail(message, status)


def backup(argv: Sequence[str] | None = None) -> None:
    """Download a consistent backup of a running farm to a file (mode 0600)."""
    parser = argparse.ArgumentParser(
        prog="backup", description="Save a consistent backup of a running mes farm (state and "
        "G-code files) through GET /api/v1/cluster/backup. It holds password and token hashes "
        "and printer keys: keep it as safe as DATA_DIR.")
    parser.add_argument("output", type=Path, help="the tar file to write")
    parser.add_argument("--url", default=os.environ.get("MES_URL", "http://127.0.0.1:8000"),
                        help="the node's REST URL (env MES_URL; default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("MES_TOKEN")
                        or os.environ.get("MES_ADMIN_TOKEN"),
                        help="an admin's bearer token (env MES_TOKEN or MES_ADMIN_TOKEN)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    args = parser.parse_args(argv)
    if not args.token:
        raise _fail("an admin token is needed: --token, MES_TOKEN or MES_ADMIN_TOKEN")
    tmp = args.output.with_name(args.output.name + ".partial")
    url = f"{args.url.rstrip('/')}/api/v1/cluster/backup"
    try:
        with httpx.stream("GET", url, headers={"Authorization": f"Bearer {args.token}"},
                          timeout=httpx.Timeout(30.0, read=600.0)) as response:
            if response.status_code != 200:
                response.read()
                raise _fail(f"{url} answered {response.status_code}: {response.text[:300]}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            index = response.headers.get("X-Backup-Raft-Index", "?")
            missing = response.headers.get("X-Backup-Missing-Files", "0")
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(f"cannot fetch {url}: {exc}") from None
    os.replace(tmp, args.output)
    print(f"backup of the farm at Raft index {index} written to {args.output}"
          + (f" ({missing} files the state names were missing on that node)"
             if missing != "0" else ""))


def restore(argv: Sequence[str] | None = None) -> None:
    """Seed this node's empty DATA_DIR and UPLOAD_PATH from a backup."""
    parser = argparse.ArgumentParser(
        prog="restore", description="Seed a new node from a backup: writes the state as this "
        "node's snapshot in DATA_DIR and the G-code files into UPLOAD_PATH. Run it on every "
        "node of a new cluster with the same file (each with its own RAFT_SELF and the same "
        "RAFT_PEERS as it will start with), then start the nodes. DATA_DIR must be empty.")
    parser.add_argument("backup", type=Path, help="a file written by `backup`")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    private_files()
    make_private(settings.data_dir, settings.upload_path)
    try:
        with open(args.backup, "rb") as source:
            restored = read_backup(source, BlobStore(settings.upload_path))
        seed_data_dir(settings.data_dir, restored, settings.raft_self, settings.peers)
        check_and_mark(settings.data_dir)
    except NewerData as exc:
        raise _fail(str(exc), EXIT_NEWER_DATA) from None
    except (BackupError, OSError) as exc:
        raise _fail(str(exc)) from None
    info = restored.info
    print(f"restored the farm at Raft index {info['raft_index']} (release "
          f"{info.get('release')}, {len(info.get('files', []))} files) into "
          f"{settings.data_dir}; start the node now")
