"""Job history newest first, page by page: the page's History tab lists the latest jobs
first (it showed the oldest)."""

from __future__ import annotations

import httpx


async def test_jobs_newest_first_page_by_page(api: httpx.AsyncClient) -> None:
    spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 1000}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    for n in range(5):
        created = await api.post("/api/v1/print_jobs", json={
            "id": f"j{n}", "filament_id": "pla", "filepath": f"p{n}.gcode",
            "print_weight_in_grams": 1})
        assert created.status_code == 201, created.text
    oldest = (await api.get("/api/v1/print_jobs")).json()
    assert [j["id"] for j in oldest] == ["j0", "j1", "j2", "j3", "j4"]
    first = await api.get("/api/v1/print_jobs", params={"order": "newest", "limit": 2})
    assert [j["id"] for j in first.json()] == ["j4", "j3"]
    seen = [j["id"] for j in first.json()]
    cursor = first.headers.get("X-Next-Cursor")
    while cursor:
        page = await api.get("/api/v1/print_jobs",
                             params={"order": "newest", "limit": 2, "cursor": cursor})
        seen += [j["id"] for j in page.json()]
        cursor = page.headers.get("X-Next-Cursor")
    assert seen == ["j4", "j3", "j2", "j1", "j0"]
    bad = await api.get("/api/v1/print_jobs", params={"order": "sideways"})
    assert bad.status_code == 422
