"""The FastAPI application of one node."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from mes.api.errors import install_error_handlers
from mes.api.routes import cluster, filaments, print_jobs, printers
from mes.node import FarmNode

API_PREFIX = "/api/v1"


def create_app(node: FarmNode) -> FastAPI:
    """The REST API at /api/v1 with OpenAPI docs at /api/v1/docs."""
    app = FastAPI(
        title="mes",
        summary="Print-farm manufacturing execution server on Raft-replicated state",
        version="0.1.0",
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.state.node = node
    api = APIRouter(prefix=API_PREFIX)
    for module in (printers, filaments, print_jobs, cluster):
        api.include_router(module.router)
    app.include_router(api)
    install_error_handlers(app)
    return app
