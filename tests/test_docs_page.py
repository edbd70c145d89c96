"""The API docs page works without internet: every asset it loads is served by the node."""

from __future__ import annotations

import re

import httpx


async def test_docs_page_loads_only_local_assets(api: httpx.AsyncClient) -> None:
    page = await api.get("/api/v1/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    assert any(a.endswith("swagger-ui.css") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the node"
        answer = await api.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 100
    assert "/api/v1/openapi.json" in page.text
    assert (await api.get("/api/v1/openapi.json")).json()["info"]["title"] == "mes"


async def test_openapi_documents_multipart_jobs_and_examples(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/api/v1/openapi.json")).json()
    body = schema["paths"]["/api/v1/print_jobs"]["post"]["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]
    assert form["properties"]["file"]["format"] == "binary"
    job = body["application/json"]["schema"]["properties"]
    assert job["filament_id"]["examples"] == ["pla-black"]
    assert "whole grams" in job["print_weight_in_grams"]["description"]
    assert "printer-1" not in str(schema)  # no example that names the wrong kind of thing


async def test_every_answer_carries_the_security_headers(api: httpx.AsyncClient) -> None:
    from mes.api.security_headers import API_POLICY

    for path in ("/api/v1/printers", "/api/v1/nothing-here", "/api/v1/openapi.json",
                 "/api/v1/health", "/metrics"):
        answer = await api.get(path)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["content-security-policy"] == API_POLICY, path
    docs = await api.get("/api/v1/docs")
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert docs.headers["x-content-type-options"] == "nosniff"
    page = await api.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert "img-src 'self' data:;" in policy  # no other origin
