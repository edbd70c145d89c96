"""The web dashboard: static files served by every node at `/` (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mes.web.assets import Assets

STATIC = Path(__file__).parent / "static"
# The page may talk only to this node: no inline scripts, no other origin.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")


def install(app: FastAPI) -> None:
    """Serve the page at `/` and its files at `/static/` (kept out of the OpenAPI): read
    once, gzipped, and linked by content hash (mes.web.assets)."""
    assets = Assets(STATIC)
    page = assets.versioned((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={
            "Cache-Control": "no-cache", "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})

    @app.get("/index.html", include_in_schema=False)
    async def index_html() -> RedirectResponse:
        return RedirectResponse("/")

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str, request: Request) -> Response:
        return assets.response(name, request)
