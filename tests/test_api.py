"""The REST API in-process, over a real single-node Raft."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PRINTER = {"id": "p1", "company": "Prusa", "model": "MK4"}
SPOOL = {"id": "f1", "type": "PLA", "color": "black", "total_weight_in_grams": 1000}


async def seed(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/printers", json=PRINTER)).status_code == 201
    assert (await api.post("/api/v1/filaments", json=SPOOL)).status_code == 201


def job(job_id: str, grams: int, **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "printer_id": "p1", "filament_id": "f1", "filepath": "/g/a.gcode",
            "print_weight_in_grams": grams, **extra}


async def state(api: httpx.AsyncClient) -> tuple[Any, ...]:
    parts = [await api.get(f"/api/v1/{name}") for name in ("printers", "filaments", "print_jobs")]
    return tuple(p.json() for p in parts)


def assert_error(response: httpx.Response, status: int, code: str | None = None,
                 field: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["message"]
    if code:
        assert error["code"] == code
    if field:
        assert error["field"] == field


async def test_raft3d_flow(api: httpx.AsyncClient) -> None:
    await seed(api)
    created = await api.post("/api/v1/print_jobs", json=job("j1", 300))
    assert created.status_code == 201
    assert created.json()["status"] == "Queued"
    assert [j["id"] for j in (await api.get("/api/v1/print_jobs?status=QUEUED")).json()] == ["j1"]
    assert (await api.get("/api/v1/print_jobs?status=running")).json() == []
    running = await api.post("/api/v1/print_jobs/j1/status", params={"status": "running"})
    assert running.json()["status"] == "Running"
    done = await api.post("/api/v1/print_jobs/j1/status", params={"status": '"done"'})
    assert done.json()["status"] == "Done"
    spool = (await api.get("/api/v1/filaments/f1")).json()
    assert spool["remaining_weight_in_grams"] == 700
    history = (await api.get("/api/v1/print_jobs/j1/history")).json()
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "Queued"), ("Queued", "Running"), ("Running", "Done")]


async def test_rules_answer_409_and_change_nothing(api: httpx.AsyncClient) -> None:
    await seed(api)
    assert (await api.post("/api/v1/print_jobs", json=job("j1", 900))).status_code == 201
    before = await state(api)
    assert_error(await api.post("/api/v1/print_jobs", json=job("j2", 101)), 409,
                 "insufficient_filament", "print_weight_in_grams")
    assert_error(await api.post("/api/v1/print_jobs/j1/status", params={"status": "done"}), 409,
                 "invalid_transition")
    assert_error(await api.delete("/api/v1/printers/p1"), 409, "printer_in_use")
    assert_error(await api.delete("/api/v1/filaments/f1"), 409, "filament_in_use")
    assert_error(await api.post("/api/v1/printers", json=PRINTER), 409, "already_exists")
    assert await state(api) == before


async def test_unknown_ids_answer_404(api: httpx.AsyncClient) -> None:
    await seed(api)
    assert_error(await api.get("/api/v1/printers/nope"), 404, "printer_not_found")
    assert_error(await api.get("/api/v1/filaments/nope"), 404, "filament_not_found")
    assert_error(await api.get("/api/v1/print_jobs/nope"), 404, "print_job_not_found")
    assert_error(await api.get("/api/v1/print_jobs/nope/history"), 404)
    assert_error(await api.post("/api/v1/print_jobs/nope/status", params={"status": "done"}), 404)
    assert_error(await api.patch("/api/v1/printers/nope", json={"model": "x"}), 404)
    assert_error(await api.post("/api/v1/print_jobs", json={**job("j1", 1), "printer_id": "zz"}),
                 404, "printer_not_found", "printer_id")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**job("j", 1), "status": "Done"}, "status"),
        ({**job("j", 1), "print_weight_in_grams": -1}, "print_weight_in_grams"),
        ({**job("j", 1), "print_weight_in_grams": 10**15}, "print_weight_in_grams"),
        ({**job("j", 1), "print_weight_in_grams": "12"}, "print_weight_in_grams"),
        ({**job("j", 1), "print_weight_in_grams": 1.5}, "print_weight_in_grams"),
        ({**job("j", 1), "filepath": "x" * 1_000_000}, "filepath"),
        ({**job("j", 1), "id": "a/b"}, "id"),
        ({**job("j", 1), "extra": 1}, "extra"),
        ({"printer_id": "p1"}, "filament_id"),
    ],
)
async def test_bad_job_input_is_422_and_changes_nothing(api: httpx.AsyncClient,
                                                        body: Any, field: str) -> None:
    await seed(api)
    before = await state(api)
    assert_error(await api.post("/api/v1/print_jobs", json=body), 422, field=field)
    assert await state(api) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/filaments", {**SPOOL, "id": "f2", "type": "NYLON"}),
        ("/api/v1/filaments", {**SPOOL, "id": "f2", "total_weight_in_grams": -3}),
        ("/api/v1/filaments", {**SPOOL, "id": "f2", "color": "x" * 1_000_000}),
        ("/api/v1/printers", {"id": "p2", "api": "Bambu"}),
        ("/api/v1/printers", {"id": "p2", "url": "ftp://x"}),
        ("/api/v1/printers", {"id": "p2", "worker": "yes"}),
        ("/api/v1/printers", {"id": "p2", "company": 42}),
        ("/api/v1/printers", ["not", "an", "object"]),
    ],
)
async def test_bad_entity_input_is_422(api: httpx.AsyncClient, path: str, body: Any) -> None:
    await seed(api)
    before = await state(api)
    assert_error(await api.post(path, json=body), 422)
    assert await state(api) == before


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    await seed(api)
    for path in ("/api/v1/printers", "/api/v1/filaments", "/api/v1/print_jobs"):
        response = await api.post(path, content=b"{not json",
                                  headers={"content-type": "application/json"})
        assert_error(response, 400, "malformed_json")


async def test_printer_api_key_is_never_returned(api: httpx.AsyncClient) -> None:
    body = {"id": "op", "api": "octoprint", "url": "http://127.0.0.1:5000",
            "api_key": "TOPSECRETKEY", "opcua_name": "Printer1", "worker": True}
    created = await api.post("/api/v1/printers", json=body)
    assert created.status_code == 201
    assert created.json()["api"] == "OctoPrint"
    assert created.json()["has_api_key"] is True
    for response in (created, await api.get("/api/v1/printers"),
                     await api.get("/api/v1/printers/op"),
                     await api.patch("/api/v1/printers/op", json={"group": "lab"})):
        assert "TOPSECRETKEY" not in response.text
        assert '"api_key"' not in response.text


async def test_patch_and_delete(api: httpx.AsyncClient) -> None:
    await seed(api)
    patched = await api.patch("/api/v1/printers/p1", json={"model": "XL", "camera_url": None})
    assert patched.json()["model"] == "XL"
    assert patched.json()["company"] == "Prusa"
    spool = await api.patch("/api/v1/filaments/f1", json={"remaining_weight_in_grams": 400})
    assert spool.json()["remaining_weight_in_grams"] == 400
    assert_error(await api.patch("/api/v1/filaments/f1", json={"remaining_weight_in_grams": 2000}),
                 409, "remaining_above_total")
    assert (await api.delete("/api/v1/filaments/f1")).status_code == 204
    assert (await api.delete("/api/v1/printers/p1")).status_code == 204
    assert await state(api) == ([], [], [])


async def test_idempotency_key_applies_once(api: httpx.AsyncClient) -> None:
    await seed(api)
    headers = {"Idempotency-Key": "order-77"}
    first = await api.post("/api/v1/print_jobs", json=job("j1", 10), headers=headers)
    second = await api.post("/api/v1/print_jobs", json=job("j1", 10), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    without_key = await api.post("/api/v1/print_jobs", json=job("j1", 10))
    assert_error(without_key, 409, "already_exists")


async def test_server_chooses_ids(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/v1/printers", json={"company": "Creality", "model": "Ender 3"})
    assert created.status_code == 201
    printer_id = created.json()["id"]
    assert (await api.get(f"/api/v1/printers/{printer_id}")).json()["model"] == "Ender 3"
    numeric = await api.post("/api/v1/printers", json={"id": 7, "model": "int id"})
    assert numeric.json()["id"] == "7"


async def test_cluster_and_health(api: httpx.AsyncClient) -> None:
    await seed(api)
    view = (await api.get("/api/v1/cluster")).json()
    assert view["role"] == "leader"
    assert view["leader"] == view["id"]
    assert view["applied_index"] == view["commit_index"] >= 2
    assert view["nodes"] == [{"id": view["id"], "address": view["id"], "self": True,
                              "reachable": True, "role": "leader", "http_url": None,
                              "opcua_url": None, "version": None, "level": None,
                              "lease": None, "printers": []}]
    assert view["undriven_printers"] == []
    health = await api.get("/api/v1/health")
    assert health.json()["status"] == "ok"


async def test_openapi_docs_are_served(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/v1/docs")).status_code == 200
    spec = (await api.get("/api/v1/openapi.json")).json()
    assert "/api/v1/print_jobs/{job_id}/status" in spec["paths"]


async def test_unknown_route_uses_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(await api.put("/api/v1/printers"), 405)


async def test_idempotency_key_is_bound_to_its_target(api: httpx.AsyncClient) -> None:
    await seed(api)
    for job_id in ("a", "b"):
        assert (await api.post("/api/v1/print_jobs", json=job(job_id, 1))).status_code == 201
    key = {"Idempotency-Key": "cancel-1"}
    first = await api.post("/api/v1/print_jobs/a/status?status=canceled", headers=key)
    again = await api.post("/api/v1/print_jobs/a/status?status=canceled", headers=key)
    other = await api.post("/api/v1/print_jobs/b/status?status=canceled", headers=key)
    assert first.json() == again.json() and first.json()["id"] == "a"
    assert other.status_code == 200 and other.json()["id"] == "b"
    assert other.json()["status"] == "Canceled"
