"""The web page's files: served by the node at `/` from the package, nothing from elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

import mes.web


async def test_the_page_and_every_file_it_uses_are_served_by_the_node(
        api: httpx.AsyncClient) -> None:
    page = await api.get("/", headers={"Authorization": ""})  # no token needed for the page
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/static/app.js", "/static/app.css", "/static/vendor/pico/pico.min.css"} <= set(
        assets)
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset} does not come from the node"
        response = await api.get(asset, headers={"Authorization": ""})
        assert response.status_code == 200, asset
        assert len(response.content) > 100
    assert (await api.get("/static/nothing.js")).status_code == 404


def test_vendored_files_keep_their_licence_beside_them() -> None:
    vendor = Path(mes.web.STATIC) / "vendor"
    for library in vendor.iterdir():
        assert (library / "LICENSE.md").exists() or (library / "LICENSE").exists(), library


def test_the_script_talks_only_to_this_node() -> None:
    script = (Path(mes.web.STATIC) / "app.js").read_text()
    assert not re.search(r"https?://", script.replace("http://www.w3.org/2000/svg", ""))
    assert "innerHTML" not in script  # text goes in as text, never as markup
