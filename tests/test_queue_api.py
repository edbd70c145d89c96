"""The queue over REST: positions, pages, who may move a job, the level it needs; and each
uploader's own name for a file that is stored once (level 7)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.node import FarmNode
from mes.state.digest import state_digest
from tests.accounts import make_user
from tests.farm_helpers import GCODE, eventually, raise_to_data_level, running_farm


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def setup_jobs(api: httpx.AsyncClient, student: dict[str, str]) -> None:
    await ok(await api.post("/api/v1/filaments", json={
        "id": "s", "type": "PLA", "color": "red", "total_weight_in_grams": 10_000}), 201)
    for n in range(4):
        await ok(await api.post("/api/v1/print_jobs", json={
            "id": f"a{n}", "filament_id": "s", "filepath": f"a{n}.gcode",
            "print_weight_in_grams": 1}), 201)
    for n in range(2):
        await ok(await api.post("/api/v1/print_jobs", headers=student, json={
            "id": f"u{n}", "filament_id": "s", "filepath": f"u{n}.gcode",
            "print_weight_in_grams": 1}), 201)


async def whole_queue(api: httpx.AsyncClient, headers: dict[str, str] | None = None,
                      limit: int = 2) -> list[tuple[str, int]]:
    """Every page of the queue, following the cursor."""
    seen: list[tuple[str, int]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/api/v1/print_jobs/queue", params=params,
                                 headers=headers or {})
        seen += [(j["id"], j["position"]) for j in await ok(response)]
        cursor = response.headers.get("x-next-cursor")
        if cursor is None:
            return seen


async def test_operators_reorder_and_every_page_shows_positions(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    student = await make_user(api, "student")
    staff = await make_user(api, "staff", role="operator")
    await setup_jobs(api, student)
    # A farm still at level 1 (a node of an older release) cannot reorder: nothing written.
    before = node.machine.read(state_digest)
    refused = await api.post("/api/v1/print_jobs/u1/queue", json={"before": "a0"})
    assert refused.status_code == 409 and \
        refused.json()["error"]["code"] == "cluster_not_upgraded", refused.text
    assert node.machine.read(state_digest) == before

    await raise_to_data_level(node)
    moved = await ok(await api.post("/api/v1/print_jobs/u1/queue", headers=staff,
                                    json={"before": "a1"}))
    assert moved["id"] == "u1" and moved["priority"] == 0
    urgent = await ok(await api.post("/api/v1/print_jobs/a3/queue", json={"priority": 10}))
    assert urgent["priority"] == 10
    expected = [("a3", 1), ("a0", 2), ("u1", 3), ("a1", 4), ("a2", 5), ("u0", 6)]
    assert await whole_queue(api) == expected
    assert await whole_queue(api, limit=100) == expected
    # A user sees only their jobs, at their places in the whole queue.
    assert await whole_queue(api, student, limit=1) == [("u1", 3), ("u0", 6)]
    listed = await ok(await api.get("/api/v1/print_jobs/queue", headers=student))
    assert all(j["estimated_start"] is None for j in listed)  # no file: never sent
    assert listed[0]["hold"]["code"] == "record_only"

    # Users may not move jobs, even their own; bad places are refused by the edge.
    for body in ({"priority": 1}, {"before": "a0"}):
        response = await api.post("/api/v1/print_jobs/u0/queue", headers=student, json=body)
        assert response.status_code == 403, response.text
    for body, field in (({}, None), ({"priority": 1, "after": "a0"}, None),
                        ({"priority": 101}, "priority"), ({"priority": "1"}, "priority"),
                        ({"before": "../x"}, "before")):
        response = await api.post("/api/v1/print_jobs/u0/queue", json=body)
        assert response.status_code == 422, (body, response.text)
        if field:
            assert field in response.json()["error"]["field"], response.text
    response = await api.post("/api/v1/print_jobs/u0/queue", json={"after": "gone"})
    assert response.status_code == 404, response.text
    await ok(await api.post("/api/v1/print_jobs/a0/status", params={"status": "Canceled"}))
    response = await api.post("/api/v1/print_jobs/a0/queue", json={"priority": 2})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_waiting")
    assert await whole_queue(api) == [("a3", 1), ("u1", 2), ("a1", 3), ("a2", 4), ("u0", 5)]
    bad_cursor = await api.get("/api/v1/print_jobs/queue", params={"cursor": "WzEsMl0"})
    assert bad_cursor.status_code == 422


async def test_each_uploader_keeps_their_name_for_one_stored_file(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    await raise_to_data_level(node)
    ada = await make_user(api, "ada")
    bob = await make_user(api, "bob")
    await ok(await api.post("/api/v1/filaments", json={
        "id": "s", "type": "PLA", "color": "red", "total_weight_in_grams": 10_000}), 201)
    first = await ok(await api.post("/api/v1/files", headers=ada,
                                    files={"file": ("part0.gcode", GCODE)}), 201)
    second = await ok(await api.post("/api/v1/files", headers=bob,
                                     files={"file": ("my-keychain.gcode", GCODE)}), 201)
    assert first["id"] == second["id"] and second["name"] == "my-keychain.gcode"
    for who, name in ((ada, "part0.gcode"), (bob, "my-keychain.gcode")):
        job = await ok(await api.post("/api/v1/print_jobs", headers=who, json={
            "filament_id": "s", "file_id": first["id"], "print_weight_in_grams": 1}), 201)
        shown = await ok(await api.get(f"/api/v1/print_jobs/{job['id']}", headers=who))
        assert shown["filepath"] == name
        files = await ok(await api.get("/api/v1/files", headers=who))
        assert [(f["id"], f["name"]) for f in files] == [(first["id"], name)]
    # Bob uploads it again under another name: his latest name is the one kept.
    await ok(await api.post("/api/v1/files", headers=bob,
                            files={"file": ("keychain-v2.gcode", GCODE)}), 201)
    files = await ok(await api.get("/api/v1/files", headers=bob))
    assert [f["name"] for f in files] == ["keychain-v2.gcode"]
    # Each downloads it under their own name.
    for who, name in ((ada, "part0.gcode"), (bob, "keychain-v2.gcode")):
        download = await api.get(f"/api/v1/files/{first['id']}", headers=who)
        assert download.status_code == 200 and download.content == GCODE
        assert f'filename="{name}"' in download.headers["content-disposition"]
    # The latest upload comes first: Ada uploads another file, then the first one again.
    other = await ok(await api.post("/api/v1/files", headers=ada,
                                    files={"file": ("other.gcode", GCODE + b"M84\n")}), 201)
    assert [f["id"] for f in await ok(await api.get("/api/v1/files", headers=ada))] == [
        other["id"], first["id"]]
    await ok(await api.post("/api/v1/files", headers=ada,
                            files={"file": ("part0-again.gcode", GCODE)}), 201)
    assert [(f["id"], f["name"]) for f in await ok(await api.get("/api/v1/files", headers=ada))
            ] == [(first["id"], "part0-again.gcode"), (other["id"], "other.gcode")]
    # Staff see every file once, under its stored (first) name.
    everything = await ok(await api.get("/api/v1/files"))
    assert sorted((f["id"], f["name"]) for f in everything) == sorted(
        [(first["id"], "part0.gcode"), (other["id"], "other.gcode")])
    # A user who never uploaded it sees no file.
    assert await ok(await api.get("/api/v1/files", headers=await make_user(api, "cy"))) == []


async def test_estimated_starts_follow_the_printing_job_and_the_files_times(
        tmp_path: Path) -> None:
    """One mock printer prints a 60 s job; the next job should start when it ends, the one
    after that when the next one's file says it will have printed (10 min)."""
    async with running_farm(tmp_path, mock_printer_job_time=60) as (node, api):
        await raise_to_data_level(node)
        await ok(await api.post("/api/v1/filaments", json={
            "id": "s", "type": "PLA", "color": "red", "total_weight_in_grams": 10_000}), 201)
        await ok(await api.post("/api/v1/printers", json={
            "id": "m0", "api": "Mock", "url": "http://mock-printer0:5000", "worker": True,
            "filament_id": "s"}), 201)
        timed = b"; estimated printing time (normal mode) = 10m 0s\n" + GCODE
        stored = await ok(await api.post("/api/v1/files",
                                         files={"file": ("ten.gcode", timed)}), 201)
        for job_id in ("first", "second", "third"):
            await ok(await api.post("/api/v1/print_jobs", json={
                "id": job_id, "filament_id": "s", "file_id": stored["id"],
                "print_weight_in_grams": 1}), 201)

        async def printing_with_time_left() -> bool:
            status = (await api.get("/api/v1/printers/m0/status")).json()
            return status.get("state") == "printing" and status.get("time_left") is not None
        await eventually(printing_with_time_left, 30, "the first job printing with time left")
        status = (await api.get("/api/v1/printers/m0/status")).json()
        waiting = await ok(await api.get("/api/v1/print_jobs/queue"))
        assert [(j["id"], j["position"]) for j in waiting] == [("second", 1), ("third", 2)]
        starts = [datetime.fromisoformat(j["estimated_start"]).timestamp() for j in waiting]
        ends_at = time.time() + status["time_left"]
        assert abs(starts[0] - ends_at) < 10, (starts, ends_at)
        assert starts[1] - starts[0] == pytest.approx(600, abs=0.01)
