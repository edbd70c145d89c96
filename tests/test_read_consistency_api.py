"""Read consistency on one in-process node: the headers, the levels and their errors."""

from __future__ import annotations

import time

import httpx
import pytest

from mes.node import FarmNode
from mes.raft.readiness import RaftProgress
from mes.workers.retention import prune_once


async def test_writes_and_reads_name_their_raft_index(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/v1/printers", json={"id": "p1"})
    assert created.status_code == 201
    index = int(created.headers["X-Raft-Index"])
    read = await api.get("/api/v1/printers/p1", headers={"X-Min-Raft-Index": str(index)})
    assert read.status_code == 200
    assert int(read.headers["X-Raft-Index"]) >= index
    linear = await api.get("/api/v1/printers", params={"consistency": "linearizable"})
    assert linear.status_code == 200
    assert int(linear.headers["X-Raft-Index"]) > index  # its no-op came after the write
    missing = await api.get("/api/v1/printers/nope")
    assert missing.status_code == 404 and "X-Raft-Index" in missing.headers


async def test_an_index_not_reached_is_a_503_and_bad_values_a_400(
        api: httpx.AsyncClient) -> None:
    began = time.monotonic()
    late = await api.get("/api/v1/filaments", params={"min_index": 10**12})
    assert late.status_code == 503
    assert late.json()["error"]["code"] == "raft_index_not_reached"
    assert time.monotonic() - began >= 2.9  # the node's RAFT_WRITE_TIMEOUT (3 s)
    bad = await api.get("/api/v1/filaments", headers={"X-Read-Consistency": "none"})
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "code": "invalid_consistency", "field": "consistency",
        "message": "X-Read-Consistency must be one of local, linearizable, not 'none'"}
    unauthenticated = await api.get("/api/v1/filaments", headers={
        "Authorization": "", "X-Read-Consistency": "linearizable"})
    assert unauthenticated.status_code == 401


async def test_the_leader_task_prunes_past_the_retention(node: FarmNode,
                                                         api: httpx.AsyncClient) -> None:
    spool = {"id": "f", "type": "PLA", "color": "red", "total_weight_in_grams": 1000}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    job = {"id": "j", "filament_id": "f", "filepath": "a.gcode", "print_weight_in_grams": 1}
    assert (await api.post("/api/v1/print_jobs", json=job)).status_code == 201
    assert (await api.post("/api/v1/print_jobs/j/status?status=canceled")).status_code == 200
    assert await prune_once(node) == {"jobs": 0, "orders": 0, "files": 0, "audit": 0}
    node.settings.job_retention_days = 1e-9  # anything that ended before now
    node.settings.audit_retention_days = 0  # kept
    totals = await prune_once(node)
    assert totals == {"jobs": 1, "orders": 0, "files": 0, "audit": 0}
    assert (await api.get("/api/v1/print_jobs/j")).status_code == 404
    assert (await api.get("/api/v1/audit")).json() != []


async def test_a_local_read_from_a_node_that_is_not_ready_says_so(
        node: FarmNode, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await api.post("/api/v1/printers", json={"id": "p1"})).status_code == 201
    ready = await api.get("/api/v1/printers")
    assert ready.status_code == 200 and "X-Node-Not-Ready" not in ready.headers
    behind = RaftProgress(leader=None, applied_index=5, commit_index=900,
                          leader_commit_index=900, stalled_for=0.0)
    monkeypatch.setattr(node, "progress", lambda: behind)  # a node replaying its journal
    for params in ({}, {"consistency": "local"}):
        read = await api.get("/api/v1/printers", params=params)
        assert read.status_code == 200
        why = read.headers["X-Node-Not-Ready"]
        assert "no leader is known" in why and "895 entries behind" in why
    # a write says nothing of the kind: it went through the leader
    created = await api.post("/api/v1/printers", json={"id": "p2"})
    assert created.status_code == 201 and "X-Node-Not-Ready" not in created.headers
