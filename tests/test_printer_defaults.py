"""A printer with a url and an api is driven unless created with `worker: false`."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(("body", "worker"), [
    ({"url": "http://10.0.0.5", "api": "OctoPrint"}, True),
    ({"api": "Mock"}, True),
    ({"url": "http://mock-printer1:5000"}, True),
    ({"url": "http://10.0.0.5", "api": "PrusaLink", "worker": False}, False),
    ({"url": "http://10.0.0.5"}, False),  # no api: cannot be driven, a record
    ({}, False),
])
async def test_worker_default(api: httpx.AsyncClient, body: dict[str, object],
                              worker: bool) -> None:
    created = await api.post("/api/v1/printers", json={"id": "p", **body})
    assert created.status_code == 201, created.text
    assert created.json()["worker"] is worker


async def test_worker_is_documented(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/api/v1/openapi.json")).json()
    worker = schema["components"]["schemas"]["PrinterCreate"]["properties"]["worker"]
    assert "record only" in worker["description"]
