"""Per-user quotas: a `user` cannot pile up jobs, open orders, API tokens or stored uploads
beyond the settings; the refusal is 429 naming the quota and changes nothing, a retry of a
request that was applied is never refused, and operators are not limited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.accounts import make_user
from tests.auth import admin_headers
from tests.farm_helpers import running_farm

LIMITS = {"quota_jobs": 2, "quota_orders": 1, "quota_tokens": 2, "quota_upload_mb": 1}


def _quota(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded" and setting in error["message"], error


async def _spool(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/filaments", json={
        "id": "s1", "type": "PLA", "color": "red", "total_weight_in_grams": 1000,
        "remaining_weight_in_grams": 1000}, headers=admin_headers())).status_code == 201


def _job(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "filament_id": "s1", "print_weight_in_grams": 1,
            "filepath": f"{job_id}.gcode"}


async def _ids(api: httpx.AsyncClient, path: str) -> set[str]:
    return {item["id"] for item in (await api.get(path, headers=admin_headers())).json()}


async def test_jobs_and_orders_stop_at_their_quota(tmp_path: Path) -> None:
    async with running_farm(tmp_path, printer_worker_interval=60.0, **LIMITS) as (_node, api):
        await _spool(api)
        ada = await make_user(api, "ada")
        first = await api.post("/api/v1/print_jobs", json=_job("a1"), headers=ada)
        assert first.status_code == 201
        keyed = {**ada, "Idempotency-Key": "second-job"}
        assert (await api.post("/api/v1/print_jobs", json=_job("a2"),
                               headers=keyed)).status_code == 201
        _quota(await api.post("/api/v1/print_jobs", json=_job("a3"), headers=ada),
               "QUOTA_JOBS")
        # a retry of an applied request answers its outcome, at the quota or not
        again = await api.post("/api/v1/print_jobs", json=_job("a2"), headers=keyed)
        assert again.status_code == 201 and again.json()["id"] == "a2"
        _quota(await api.post("/api/v1/orders", json={"jobs": [_job("o1")]}, headers=ada),
               "QUOTA_JOBS")
        assert await _ids(api, "/api/v1/print_jobs") == {"a1", "a2"}
        # a finished (canceled) job frees its place
        assert (await api.post("/api/v1/print_jobs/a1/status", params={"status": "canceled"},
                                headers=ada)).status_code == 200
        order = await api.post("/api/v1/orders", json={"id": "o1", "jobs": [_job("o1-1")]},
                               headers=ada)
        assert order.status_code == 201, order.text
        # one open order at most; an order of more jobs than are left is refused whole
        assert (await api.post("/api/v1/print_jobs/a2/status", params={"status": "canceled"},
                                headers=ada)).status_code == 200
        _quota(await api.post("/api/v1/orders", json={"id": "o2", "jobs": [_job("o2-1")]},
                              headers=ada), "QUOTA_ORDERS")
        assert (await api.post("/api/v1/print_jobs/o1-1/status", params={"status": "canceled"},
                                headers=ada)).status_code == 200
        _quota(await api.post("/api/v1/orders", json={"id": "o3", "jobs": [
            _job("o3-1"), _job("o3-2"), _job("o3-3")]}, headers=ada), "QUOTA_JOBS")
        assert await _ids(api, "/api/v1/orders") == {"o1"}
        # staff are not limited
        for index in range(4):
            assert (await api.post("/api/v1/print_jobs", json=_job(f"adm{index}"),
                                   headers=admin_headers())).status_code == 201


async def test_api_tokens_stop_at_their_quota(tmp_path: Path) -> None:
    async with running_farm(tmp_path, **LIMITS) as (_node, api):
        ada = await make_user(api, "ada")  # its first token, made by the admin
        second = await api.post("/api/v1/tokens", json={"name": "ci"}, headers=ada)
        assert second.status_code == 201
        _quota(await api.post("/api/v1/tokens", json={"name": "more"}, headers=ada),
               "QUOTA_TOKENS")
        assert (await api.delete(f"/api/v1/tokens/{second.json()['id']}",
                                 headers=ada)).status_code == 200
        assert (await api.post("/api/v1/tokens", json={"name": "more"},
                               headers=ada)).status_code == 201


def _gcode(tag: bytes, size: int) -> bytes:
    line = b"G1 X10 Y10 E0.1 ; " + tag + b"\n"
    return b"G28\n" + line * (size // len(line))


async def test_stored_uploads_stop_at_their_quota(tmp_path: Path) -> None:
    async with running_farm(tmp_path, **LIMITS) as (_node, api):
        ada = await make_user(api, "ada")
        part = _gcode(b"one", 600 * 1024)
        first = await api.post("/api/v1/files", files={"file": ("one.gcode", part)},
                               headers=ada)
        assert first.status_code == 201, first.text
        refused = await api.post("/api/v1/files", files={
            "file": ("two.gcode", _gcode(b"two", 600 * 1024))}, headers=ada)
        _quota(refused, "QUOTA_UPLOAD_MB")
        assert refused.json()["error"]["field"] == "file"
        # content ada stored already takes no more room
        same = await api.post("/api/v1/files", files={"file": ("again.gcode", part)},
                              headers=ada)
        assert same.status_code == 201 and same.json()["id"] == first.json()["id"]
        assert await _ids(api, "/api/v1/files") == {first.json()["id"]}
        # staff are not limited
        assert (await api.post("/api/v1/files", files={
            "file": ("two.gcode", _gcode(b"two", 600 * 1024))},
            headers=admin_headers())).status_code == 201
