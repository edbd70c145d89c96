"""Backup of a running node and restore into new nodes: the same facts, the same state."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.api.app import create_app
from mes.auth.bootstrap import ensure_admin
from mes.backup import KIND, BackupError, read_backup, seed_data_dir
from mes.config import Settings
from mes.files.store import BlobStore
from mes.node import FarmNode
from mes.state.digest import state_digest
from mes.version import EXIT_NEWER_DATA, RELEASE, SCHEMA
from tests.accounts import make_user
from tests.auth import admin_headers
from tests.polling import wait_for
from tests.ports import free_port

GCODE = b"; a small print\nG28\nG1 X10 Y10 F3000\n"


def _restore(archive: Path, data: Path, upload: Path, raft_self: str,
             peers: str = "") -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAFT_", "DATA_DIR"))},
           "DATA_DIR": str(data), "UPLOAD_PATH": str(upload), "RAFT_SELF": raft_self,
           "RAFT_PEERS": peers}
    return subprocess.run([str(Path(sys.executable).parent / "restore"), str(archive)],
                          capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


async def _farm(api: httpx.AsyncClient) -> dict[str, Any]:
    """Printers, a spool, users, a stored file and jobs; returns what it made."""
    assert (await api.post("/api/v1/printers", json={
        "id": "p1", "company": "Prusa", "model": "MK4"})).status_code == 201
    assert (await api.post("/api/v1/filaments", json={
        "id": "f1", "type": "PLA", "color": "red", "total_weight_in_grams": 1000,
        "remaining_weight_in_grams": 1000})).status_code == 201
    ada = await make_user(api, "ada")
    upload = await api.post("/api/v1/files", files={"file": ("part.gcode", GCODE)})
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["id"]
    for job_id, grams in (("j1", 10), ("j2", 20)):
        created = await api.post("/api/v1/print_jobs", json={
            "id": job_id, "printer_id": "p1", "filament_id": "f1", "filepath": "part.gcode",
            "file_id": file_id, "print_weight_in_grams": grams}, headers=ada)
        assert created.status_code == 201, created.text
    assert (await api.post("/api/v1/print_jobs/j2/status?status=canceled")).status_code == 200
    return {"ada": ada, "file_id": file_id}


async def _facts(api: httpx.AsyncClient) -> dict[str, Any]:
    facts = {}
    for name in ("printers", "filaments", "print_jobs", "users", "files"):
        response = await api.get(f"/api/v1/{name}")
        assert response.status_code == 200, response.text
        facts[name] = response.json()
    for job in facts["print_jobs"]:
        history = await api.get(f"/api/v1/print_jobs/{job['id']}/history")
        facts[f"history/{job['id']}"] = history.json()
    return facts


def _node(tmp_path: Path, name: str, raft_self: str | None = None) -> FarmNode:
    settings = Settings(_env_file=None, data_dir=tmp_path / name / "data",  # type: ignore[call-arg]
                        upload_path=tmp_path / name / "upload",
                        raft_self=raft_self or f"127.0.0.1:{free_port()}",
                        raft_write_timeout=3.0)
    return FarmNode(settings)


async def test_a_backup_restored_into_a_new_node_holds_the_same_farm(
        node: FarmNode, api: httpx.AsyncClient, tmp_path: Path) -> None:
    made = await _farm(api)
    response = await api.get("/api/v1/cluster/backup")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    index = int(response.headers["X-Backup-Raft-Index"])
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        names = tar.getnames()
        info = json.loads(tar.extractfile("backup.json").read())  # type: ignore[union-attr]
    assert names == ["backup.json", "state.sqlite", f"blobs/{made['file_id']}"]
    assert info["kind"] == KIND and info["release"] == RELEASE and info["schema"] == SCHEMA
    assert info["raft_index"] == index and info["files"] == [made["file_id"]]
    source_facts = await _facts(api)
    source_digest = node.machine.read(state_digest)

    archive = tmp_path / "farm.tar"
    archive.write_bytes(response.content)
    restored_dir = tmp_path / "restored"
    raft_self = f"127.0.0.1:{free_port()}"
    result = _restore(archive, restored_dir / "data", restored_dir / "upload", raft_self)
    assert result.returncode == 0, result.stderr
    assert f"Raft index {index}" in result.stdout
    assert (restored_dir / "data" / "raft.snapshot").stat().st_mode & 0o077 == 0

    restored = _node(tmp_path, "restored", raft_self)
    try:
        wait_for(restored.raft.is_leader, 15, "the restored node to lead")
        wait_for(lambda: restored.raft.raftLastApplied >= index, 15, "the restored state")
        assert restored.machine.read(state_digest) == source_digest
        await ensure_admin(restored)
        transport = httpx.ASGITransport(app=create_app(restored))
        async with httpx.AsyncClient(transport=transport, base_url="http://mes",
                                     headers=admin_headers()) as client:
            assert await _facts(client) == source_facts
            # tokens still sign in, stored G-code is there, and the log goes on after it
            mine = await client.get("/api/v1/print_jobs/j1", headers=made["ada"])
            assert mine.status_code == 200 and mine.json()["status"] == "Queued"
            blob = await client.get(f"/api/v1/files/{made['file_id']}")
            assert blob.status_code == 200 and blob.content == GCODE
            written = await client.post("/api/v1/filaments", json={
                "id": "f2", "type": "PETG", "color": "blue", "total_weight_in_grams": 500,
                "remaining_weight_in_grams": 500})
            assert written.status_code == 201, written.text
            assert int(written.headers["X-Raft-Index"]) > index
    finally:
        restored.close()


async def test_only_an_admin_takes_a_backup(api: httpx.AsyncClient) -> None:
    operator = await make_user(api, "olga", role="operator")
    response = await api.get("/api/v1/cluster/backup", headers=operator)
    assert response.status_code == 403
    anonymous = await api.get("/api/v1/cluster/backup", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def _archive(entries: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    out.seek(0)
    return out


async def test_restore_refuses_damaged_and_newer_backups_and_used_data_dirs(
        api: httpx.AsyncClient, tmp_path: Path) -> None:
    await _farm(api)
    good = (await api.get("/api/v1/cluster/backup")).content
    blobs = BlobStore(tmp_path / "blobs")
    with tarfile.open(fileobj=io.BytesIO(good)) as tar:
        entries = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    info = json.loads(entries["backup.json"])

    damaged = {**entries, "state.sqlite": entries["state.sqlite"][:-1] + b"x"}
    with pytest.raises(BackupError, match="damaged"):
        read_backup(_archive(damaged), blobs)
    with pytest.raises(BackupError, match="not a mes backup"):
        read_backup(_archive({"state.sqlite": b"x"}), blobs)
    with pytest.raises(BackupError, match="not a readable backup"):
        read_backup(io.BytesIO(b"not a tar at all" * 100), blobs)

    newer = dict(entries)
    newer["backup.json"] = json.dumps({**info, "schema": SCHEMA + 1, "min_reader": SCHEMA + 1,
                                       "release": "99.0.0"}).encode()
    archive = tmp_path / "newer.tar"
    archive.write_bytes(_archive(newer).getvalue())
    result = _restore(archive, tmp_path / "n" / "data", tmp_path / "n" / "up",
                      f"127.0.0.1:{free_port()}")
    assert result.returncode == EXIT_NEWER_DATA, result.stderr
    assert "release 99.0.0" in result.stderr
    assert not (tmp_path / "n" / "data" / "raft.snapshot").exists()

    used = tmp_path / "used"
    (used / "data").mkdir(parents=True)
    (used / "data" / "raft.journal").write_bytes(b"something")
    backup = read_backup(io.BytesIO(good), blobs)
    with pytest.raises(BackupError, match="new node only"):
        seed_data_dir(used / "data", backup, "127.0.0.1:7000", [])
    assert (used / "data" / "raft.journal").read_bytes() == b"something"


def test_a_backup_of_release_0_1_0_state_is_migrated_when_restored(tmp_path: Path) -> None:
    """0.1.0 had no backup route: its snapshot image (tests/corpus) packed as a backup of
    schema 1 is restored by this release and migrated, every 0.1.0 row kept."""
    import hashlib
    import pickle
    import sqlite3

    from mes.backup import IMAGE, MANIFEST
    from mes.state import migrations
    from tests.corpus.record_release import unpack

    corpus = Path(__file__).parent / "corpus" / "release-0.1.0" / "data.tar.gz"
    data, _ = unpack(corpus, tmp_path / "corpus")
    payload = pickle.loads((data / "raft.snapshot").read_bytes())
    image, index = payload["db"], payload["raft"][0][1]
    manifest = {"kind": KIND, "release": "0.1.0", "schema": 1, "min_reader": 1,
                "raft_index": index, "image_sha256": hashlib.sha256(image).hexdigest(),
                "files": []}
    archive = tmp_path / "old.tar"
    archive.write_bytes(_archive({MANIFEST: json.dumps(manifest).encode(),
                                  IMAGE: image}).getvalue())
    raft_self = f"127.0.0.1:{free_port()}"
    result = _restore(archive, tmp_path / "new" / "data", tmp_path / "new" / "upload",
                      raft_self)
    assert result.returncode == 0, result.stderr

    old = sqlite3.connect(":memory:")
    old.deserialize(image)
    tables = [r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    restored = _node(tmp_path, "new", raft_self)
    try:
        wait_for(lambda: restored.raft.raftLastApplied >= index, 15, "the restored state")
        assert restored.machine.read(migrations.schema_of) == SCHEMA
        for table in tables:
            # Every column it had, with every value (later schemas may add columns).
            columns = ", ".join(f'"{r[1]}"' for r in old.execute(f"PRAGMA table_info({table})"))
            rows = sorted(map(repr, old.execute(f"SELECT {columns} FROM {table}")))
            now = restored.machine.read(lambda c, t=table, cs=columns: sorted(
                repr(tuple(r)) for r in c.exec_driver_sql(f"SELECT {cs} FROM {t}")))
            assert now == rows, table
        assert len(tables) > 15
    finally:
        restored.close()
        old.close()
