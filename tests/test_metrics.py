"""GET /metrics: the Prometheus text format, values checked after known actions."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mes.config import Settings
from mes.node import FarmNode
from mes.state.ops import Op
from tests.accounts import make_user
from tests.farm_helpers import eventually, running_farm, upload
from tests.ports import free_port
from tests.shard_helpers import epoch_of

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: httpx.AsyncClient, **kwargs: Any) -> Samples:
    response = await api.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def place_all(node: FarmNode, ids: list[str]) -> dict[str, int]:
    """Place the printers on this node through Raft, as the leader does; their epochs."""
    me = node.settings.raft_self
    assert (await node.writer.submit(Op.NODE_LEASE, {"node": me})).ok
    leader = (await node.writer.submit(Op.LEADER_BEGIN, {"leader": me})).value["epoch"]
    placed = await node.writer.submit(Op.SHARD_ASSIGN, {
        "leader_epoch": leader, "now": time.time(),
        "moves": [{"printer_id": p, "epoch": 0, "node": me} for p in ids]})
    assert placed.ok, placed.error
    return {p: epoch_of(node.machine, p) for p in ids}


async def test_printers_by_state_follow_creation_and_telemetry(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    for i in range(3):
        assert (await api.post("/api/v1/printers", json={"id": f"p{i}"})).status_code == 201
    samples = await scrape(api)
    assert value(samples, "mes_printers", state="offline") == 3  # never reported
    assert value(samples, "mes_printers", state="printing") == 0
    epochs = await place_all(node, ["p0", "p1", "p2"])
    now = time.time()
    outcome = await node.writer.submit(Op.PRINTER_TELEMETRY, {"statuses": [
        {"printer_id": "p0", "epoch": epochs["p0"], "state": "printing", "observed_at": now},
        {"printer_id": "p1", "epoch": epochs["p1"], "state": "finished", "observed_at": now}]})
    assert outcome.ok and outcome.value["stale"] == [], outcome
    held = await node.writer.submit(Op.PRINTER_ATTENTION,
                                    {"epoch": epochs["p2"], "id": "p2", "reason": "x"})
    assert held.ok, held.error
    samples = await scrape(api)
    assert {s: value(samples, "mes_printers", state=s) for s in
            ("printing", "paused", "idle", "offline", "error")} == {
        "printing": 1, "paused": 0, "idle": 1, "offline": 0, "error": 1}


async def test_applied_and_rejected_commands_are_counted_by_op_and_code(
        api: httpx.AsyncClient) -> None:
    before = await scrape(api)
    assert (await api.post("/api/v1/printers", json={"id": "p1"})).status_code == 201
    assert (await api.post("/api/v1/printers", json={"id": "p2"})).status_code == 201
    again = await api.post("/api/v1/printers", json={"id": "p1"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_exists"
    after = await scrape(api)
    name = "mes_commands_applied_total"
    assert value(after, name, op=Op.PRINTER_CREATE) - value(
        before, name, op=Op.PRINTER_CREATE) == 2
    rejected = "mes_commands_rejected_total"
    assert value(after, rejected, op=Op.PRINTER_CREATE, code="already_exists") - value(
        before, rejected, op=Op.PRINTER_CREATE, code="already_exists") == 1
    assert value(after, name, op=Op.PRINTER_DELETE) == value(before, name, op=Op.PRINTER_DELETE)


async def test_http_requests_are_counted_by_route_template_and_status(
        api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/printers", json={"id": "p1"})).status_code == 201
    assert (await api.get("/api/v1/printers/p1")).status_code == 200
    assert (await api.get("/api/v1/printers/p1")).status_code == 200
    assert (await api.get("/api/v1/printers/nope")).status_code == 404
    assert (await api.get("/api/v1/no/such/path")).status_code == 404
    assert (await api.get("/api/v1/printers/p1", headers={"Authorization": ""})
            ).status_code == 401
    samples = await scrape(api)
    route = "/api/v1/printers/{printer_id}"
    requests = "mes_http_requests_total"
    assert value(samples, requests, method="GET", route=route, status="200") == 2
    assert value(samples, requests, method="GET", route=route, status="404") == 1
    assert value(samples, requests, method="GET", route=route, status="401") == 1
    assert value(samples, requests, method="POST", route="/api/v1/printers",
                 status="201") == 1
    assert value(samples, requests, method="GET", route="<unmatched>", status="404") == 1
    # No series carries a raw id.
    assert not [key for key in samples if ("route", "/api/v1/printers/p1") in key[1]]
    duration = "mes_http_request_duration_seconds"
    assert value(samples, f"{duration}_count", method="GET", route=route) == 4
    assert value(samples, f"{duration}_bucket", method="GET", route=route, le="+Inf") == 4
    assert value(samples, f"{duration}_sum", method="GET", route=route) > 0


async def test_raft_jobs_and_blob_store_gauges(api: httpx.AsyncClient) -> None:
    spool = {"id": "f1", "type": "PLA", "color": "red", "total_weight_in_grams": 100}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    for job_id in ("j1", "j2"):
        job = {"id": job_id, "filament_id": "f1", "filepath": "a.gcode",
               "print_weight_in_grams": 1}
        assert (await api.post("/api/v1/print_jobs", json=job)).status_code == 201
    canceled = await api.post("/api/v1/print_jobs/j2/status", params={"status": "canceled"})
    assert canceled.status_code == 200, canceled.text
    content = b"G28 ; for the blob store gauge\n"
    await upload(api, content=content)
    samples = await scrape(api)
    assert value(samples, "mes_print_jobs", status="Queued") == 1
    assert value(samples, "mes_print_jobs", status="Canceled") == 1
    assert value(samples, "mes_print_jobs", status="Done") == 0
    assert value(samples, "mes_blob_store_files") == 1
    assert value(samples, "mes_blob_store_bytes") == len(content)
    assert value(samples, "mes_raft_role", role="leader") == 1
    assert value(samples, "mes_raft_role", role="follower") == 0
    assert value(samples, "mes_raft_term") >= 1
    assert value(samples, "mes_raft_applied_index") >= 5
    assert value(samples, "mes_raft_commit_index") == value(samples, "mes_raft_applied_index")
    assert value(samples, "mes_raft_apply_lag") == 0
    assert value(samples, "process_cpu_seconds_total") > 0


async def test_only_operators_and_admins_scrape_unless_metrics_are_public(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    anonymous = await api.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    user = await make_user(api, "student")
    forbidden = await api.get("/metrics", headers=user)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    operator = await make_user(api, "staff", role="operator")
    assert "mes_raft_term" in (await api.get("/metrics", headers=operator)).text
    node.settings.metrics_public = True
    assert "mes_raft_term" in (await api.get("/metrics", headers={"Authorization": ""})).text


def test_each_node_has_its_own_registry(node: FarmNode, tmp_path: Path) -> None:
    other = FarmNode(Settings(_env_file=None, data_dir=tmp_path / "other",  # type: ignore[call-arg]
                              upload_path=tmp_path / "other-upload",
                              raft_self=f"127.0.0.1:{free_port()}"))
    try:
        command = {"op": Op.NOOP, "args": {}, "ts": time.time()}
        node.machine.apply(command)
        node.machine.apply(command)
        other.machine.apply(command)
        applied = "mes_commands_applied_total"
        assert node.metrics.registry.get_sample_value(applied, {"op": Op.NOOP}) == 2
        assert other.metrics.registry.get_sample_value(applied, {"op": Op.NOOP}) == 1
    finally:
        other.close()


async def test_worker_ticks_lag_and_failed_polls(tmp_path: Path) -> None:
    async with running_farm(tmp_path) as (_, api):
        assert (await api.post("/api/v1/printers", json={
            "id": "m0", "api": "Mock", "url": "http://mock-m0:5000"})).status_code == 201
        # Nothing listens there: every poll of this printer fails.
        assert (await api.post("/api/v1/printers", json={
            "id": "gone", "api": "OctoPrint", "url": f"http://127.0.0.1:{free_port()}",
            "api_key": "k"})).status_code == 201

        async def counted() -> Samples | None:
            samples = await scrape(api)
            ready = (value(samples, "mes_worker_ticks_total") >= 10
                     and value(samples, "mes_worker_polls_failed_total") >= 2)
            return samples if ready else None

        samples = await eventually(counted, 20, "worker ticks and failed polls")
        assert value(samples, "mes_workers_running") == 2
        assert value(samples, "mes_worker_tick_lag_seconds_count") >= 10
        assert value(samples, "mes_worker_tick_lag_seconds_bucket", le="+Inf") == value(
            samples, "mes_worker_tick_lag_seconds_count")
        # The failed polls are the unreachable printer's only: the mock answers every time.
        assert value(samples, "mes_worker_polls_failed_total") < value(
            samples, "mes_worker_ticks_total")
        assert value(samples, "mes_printers", state="offline") >= 1


async def test_gc_pauses_and_event_loop_lag_are_measured(tmp_path: Path) -> None:
    async with running_farm(tmp_path) as (_, api):
        gc.collect()  # a full collection, timed by the node's gc callback
        time.sleep(0.3)  # blocks the event loop on purpose: the probe wakes 0.3 s late

        async def measured() -> Samples | None:
            samples = await scrape(api)
            ready = (value(samples, "mes_gc_pause_seconds_count", generation="2") >= 1
                     and value(samples, "mes_event_loop_lag_seconds_count") >= 3)
            return samples if ready else None

        samples = await eventually(measured, 20, "a timed collection and loop probes")
        late = value(samples, "mes_event_loop_lag_seconds_count") - value(
            samples, "mes_event_loop_lag_seconds_bucket", le="0.25")
        assert late >= 1  # the blocked probe, 0.3 s late, lies above the 0.25 s bucket
        assert value(samples, "mes_gc_pause_seconds_sum", generation="2") > 0
