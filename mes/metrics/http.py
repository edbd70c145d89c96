"""An ASGI middleware counting HTTP requests by route template (never the raw path, whose
ids would make a series per entity) and status, with their latency."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mes.metrics.node import NodeMetrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests no route matched (404s of unknown paths, static files of the docs page).
UNMATCHED = "<unmatched>"


def route_of(scope: Scope) -> str:
    """The template of the route that answered (e.g. /api/v1/printers/{printer_id})."""
    # FastAPI 0.16x keeps included routers nested: the full template of the matched route is
    # in its own part of the scope; earlier versions flatten routes, so the route has it.
    fastapi_part = scope.get("fastapi")
    candidates: list[Any] = []
    if isinstance(fastapi_part, dict):
        candidates.append(fastapi_part.get("effective_route_context"))
    candidates.append(scope.get("route"))
    for matched in candidates:
        path = getattr(matched, "path_format", None) or getattr(matched, "path", None)
        if isinstance(path, str) and path:
            return path
    return UNMATCHED


class RequestMetrics:
    """Counts every HTTP request once it is answered (or fails), with its duration."""

    def __init__(self, app: ASGIApp, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope.get("method", "")
            method = method if method in METHODS else "OTHER"
            route = route_of(scope)
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_duration.labels(method, route).observe(
                time.perf_counter() - started)
