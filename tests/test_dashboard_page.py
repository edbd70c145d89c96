"""The web page's files: served by the node at `/` from the package, nothing from elsewhere."""

from __future__ import annotations

import hashlib
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
    files = {a.split("?")[0] for a in assets}
    assert {"/static/app.js", "/static/app.css", "/static/vendor/pico/pico.min.css"} <= files
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset} does not come from the node"
        response = await api.get(asset, headers={"Authorization": ""})
        assert response.status_code == 200, asset
        assert len(response.content) > 100
    assert (await api.get("/static/nothing.js")).status_code == 404
    assert (await api.get("/static/../__init__.py")).status_code == 404


async def test_the_pages_files_are_named_by_content_compressed_and_kept(
        api: httpx.AsyncClient) -> None:
    """Linked with `?v=<hash of the content>` and kept a year (immutable); any other request
    must ask again; text is sent gzipped to a client that accepts it."""
    page = (await api.get("/")).text
    linked = re.search(r'src="(/static/app\.js\?v=([0-9a-f]{16}))"', page)
    assert linked is not None, page[:500]
    script = (Path(mes.web.STATIC) / "app.js").read_bytes()
    assert linked.group(2) == hashlib.sha256(script).hexdigest()[:16]
    packed = await api.get(linked.group(1), headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.content == script  # httpx decodes it
    assert int(packed.headers["content-length"]) < len(script) / 2
    assert packed.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert packed.headers["content-type"].startswith("text/javascript")
    plain = await api.get("/static/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == script
    assert plain.headers["cache-control"] == "no-cache"
    stale = await api.get("/static/app.js?v=0000000000000000")
    assert stale.headers["cache-control"] == "no-cache"


def test_vendored_files_keep_their_licence_beside_them() -> None:
    vendor = Path(mes.web.STATIC) / "vendor"
    for library in vendor.iterdir():
        assert (library / "LICENSE.md").exists() or (library / "LICENSE").exists(), library


def test_the_script_talks_only_to_this_node() -> None:
    script = (Path(mes.web.STATIC) / "app.js").read_text()
    assert not re.search(r"https?://", script.replace("http://www.w3.org/2000/svg", ""))
    assert "innerHTML" not in script  # text goes in as text, never as markup
