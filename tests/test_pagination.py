"""List routes answer pages: limit, cursor, next-page headers, filters, 422 on bad input."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from mes.api.pagination import MAX_LIMIT, NEXT_CURSOR_HEADER
from mes.state import listing
from mes.state.machine import StateMachine
from mes.state.ops import Op

JOBS = "/api/v1/print_jobs"


async def make(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def seed_jobs(api: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    for printer in ("p1", "p2"):
        await make(api, "/api/v1/printers", {"id": printer})
    await make(api, "/api/v1/filaments", {"id": "f1", "type": "PLA", "color": "k",
                                          "total_weight_in_grams": 10_000})
    return [await make(api, JOBS, {"id": f"j{n:02d}", "printer_id": f"p{n % 2 + 1}",
                                   "filament_id": "f1", "filepath": "a.gcode",
                                   "print_weight_in_grams": 1})
            for n in range(count)]


def flat(pages: list[list[str]]) -> list[str]:
    return [item for page in pages for item in page]


async def all_pages(api: httpx.AsyncClient, path: str, **params: Any) -> list[list[str]]:
    """Follow the Link headers from the first page to the last; the ids of every page."""
    pages: list[list[str]] = []
    response = await api.get(path, params=params)
    while True:
        assert response.status_code == 200, response.text
        pages.append([item.get("id") or item["to_status"] for item in response.json()])
        link = response.headers.get("link")
        if link is None:
            assert NEXT_CURSOR_HEADER not in response.headers
            return pages
        assert link.endswith('>; rel="next"')
        assert f"cursor={response.headers[NEXT_CURSOR_HEADER]}" in link
        response = await api.get(link[1:link.index(">")])


async def test_jobs_page_through_every_job_once_in_creation_order(api: httpx.AsyncClient) -> None:
    created = await seed_jobs(api, 25)
    pages = await all_pages(api, JOBS, limit=10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert flat(pages) == [j["id"] for j in created]
    # the filter stays in the next link
    pages = await all_pages(api, JOBS, limit=4, printer_id="p2")
    assert flat(pages) == [f"j{n:02d}" for n in range(1, 25, 2)]
    assert [len(p) for p in pages] == [4, 4, 4]


async def test_default_limit_is_100_and_the_last_page_has_no_next(api: httpx.AsyncClient
                                                                 ) -> None:
    await seed_jobs(api, 0)
    for n in range(101):
        await make(api, JOBS, {"id": f"x{n:03d}", "filament_id": "f1", "filepath": "a",
                               "print_weight_in_grams": 1})
    first = await api.get(JOBS)
    assert len(first.json()) == 100
    second = await api.get(JOBS, params={"cursor": first.headers[NEXT_CURSOR_HEADER]})
    assert [j["id"] for j in second.json()] == ["x100"]
    assert "link" not in second.headers
    exact = await api.get(JOBS, params={"limit": 101})
    assert len(exact.json()) == 101 and "link" not in exact.headers


async def test_job_filters(api: httpx.AsyncClient) -> None:
    created = await seed_jobs(api, 6)
    for job_id in ("j01", "j04"):
        answer = await api.post(f"{JOBS}/{job_id}/status", params={"status": "canceled"})
        assert answer.status_code == 200
    ids = await _ids(api, status="CANCELED")
    assert ids == ["j01", "j04"]
    assert await _ids(api, status="queued", printer_id="p1") == ["j00", "j02"]
    assert await _ids(api, filament_id="f1", printer_id="p9") == []
    middle = created[3]["created_at"]
    assert await _ids(api, created_after=middle) == ["j03", "j04", "j05"]
    assert await _ids(api, created_before=middle) == ["j00", "j01", "j02"]
    assert await _ids(api, created_after=created[1]["created_at"],
                      created_before=created[3]["created_at"]) == ["j01", "j02"]
    assert await _ids(api, created_after="2000-01-01T00:00:00Z", limit=2) == ["j00", "j01"]
    assert await _ids(api, created_after=4_102_444_800) == []  # 2100, as Unix seconds


async def _ids(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get(JOBS, params=params)
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()]


def _cursor(key: Any) -> str:
    import json
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", [JOBS, "/api/v1/printers", "/api/v1/filaments",
                                  "/api/v1/files", f"{JOBS}/j00/history"])
@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "limit"), ({"limit": MAX_LIMIT + 1}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "not a cursor!"}, "cursor"), ({"cursor": "e30"}, "cursor"),
    ({"cursor": _cursor(["a", "b", "c"])}, "cursor"), ({"cursor": _cursor([True])}, "cursor"),
    ({"cursor": "x" * 700}, "cursor"),
])
async def test_bad_limit_or_cursor_is_422(api: httpx.AsyncClient, path: str,
                                          params: dict[str, Any], field: str) -> None:
    await seed_jobs(api, 1)
    response = await api.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize("params", [{"created_after": "yesterday"}, {"status": "Lost"},
                                    {"printer_id": "p" * 65}])
async def test_bad_filters_are_422(api: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await api.get(JOBS, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == next(iter(params))


async def test_max_limit_is_accepted(api: httpx.AsyncClient) -> None:
    await seed_jobs(api, 3)
    response = await api.get(JOBS, params={"limit": MAX_LIMIT})
    assert response.status_code == 200 and len(response.json()) == 3


async def test_printers_filaments_files_and_history_are_paged(api: httpx.AsyncClient) -> None:
    await seed_jobs(api, 1)
    for n in range(3, 6):
        await make(api, "/api/v1/printers", {"id": f"p{n}"})
    pages = await all_pages(api, "/api/v1/printers", limit=2)
    assert pages == [["p1", "p2"], ["p3", "p4"], ["p5"]]
    await make(api, "/api/v1/filaments", {"id": "f0", "type": "PLA", "color": "k",
                                          "total_weight_in_grams": 5})
    pages = await all_pages(api, "/api/v1/filaments", limit=1)
    assert pages == [["f0"], ["f1"]]
    names = []
    for n in range(3):
        answer = await api.post("/api/v1/files",
                                files={"file": (f"f{n}.gcode", f"G28 ; {n}\n".encode())})
        assert answer.status_code == 201
        names.append(answer.json()["id"])
    pages = await all_pages(api, "/api/v1/files", limit=2)
    assert flat(pages) == names[::-1]  # newest first
    assert [len(p) for p in pages] == [2, 1]
    for status in ("running", "done"):
        await api.post(f"{JOBS}/j00/status", params={"status": status})
    pages = await all_pages(api, f"{JOBS}/j00/history", limit=2)
    assert pages == [["Queued", "Running"], ["Done"]]
    missing = await api.get(f"{JOBS}/nope/history")
    assert missing.status_code == 404


def test_jobs_with_the_same_time_are_paged_by_id() -> None:
    machine = StateMachine()
    try:
        machine.apply({"op": Op.FILAMENT_CREATE, "ts": 1.0, "args": {
            "id": "f", "type": "PLA", "color": "k", "total_weight_in_grams": 100}})
        for job_id in ("c", "a", "b", "d"):
            machine.apply({"op": Op.JOB_CREATE, "ts": 5.0, "args": {
                "id": job_id, "filament_id": "f", "filepath": "x", "print_weight_in_grams": 1}})
        where = listing.JobFilter()
        first = machine.read(lambda c: listing.jobs_page(c, where, None, 2))
        assert [j["id"] for j in first] == ["a", "b"]
        rest = machine.read(lambda c: listing.jobs_page(c, where, (5.0, "b"), 5))
        assert [j["id"] for j in rest] == ["c", "d"]
    finally:
        machine.close()
