"""The FastAPI application of one node."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

from mes.api.auth_first import AuthBeforeBody
from mes.api.body_limit import BodyLimit, upload_limits
from mes.api.camera import Cameras
from mes.api.errors import install_error_handlers
from mes.api.raft_index import RaftIndexHeader
from mes.api.routes import (
    audit,
    backup,
    camera,
    cluster,
    dashboard,
    events,
    filaments,
    files,
    groups,
    membership,
    metrics,
    orders,
    print_jobs,
    printers,
    session,
    tokens,
    users,
    utilization,
    webhooks,
)
from mes.api.security_headers import SecurityHeaders
from mes.app.ports import Farm
from mes.config import Settings
from mes.metrics.http import RequestMetrics
from mes.version import RELEASE
from mes.web import install as install_web

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def create_app(node: Farm) -> FastAPI:
    """The REST API at /api/v1 with OpenAPI docs at /api/v1/docs."""
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start_background()
        _say_where(node.settings)
        try:
            yield
        finally:
            await app.state.cameras.aclose()
            await node.stop_background()

    # The docs page's scripts and styles come from the package (fastapi-offline ships
    # Swagger UI's files): farms often have no internet, where a CDN page stays blank.
    app = FastAPIOffline(
        static_url=f"{API_PREFIX}/docs/static",
        lifespan=lifespan,
        title="mes",
        summary="Print-farm manufacturing execution server on Raft-replicated state",
        version=RELEASE,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.state.node = node
    app.state.cameras = Cameras(node.settings.printer_targets)
    app.add_middleware(BodyLimit, limit_for=upload_limits(
        API_PREFIX, node.settings.http.max_upload_mb * 2**20))
    app.add_middleware(RaftIndexHeader)
    # Added after BodyLimit, so it runs before it: a 401 even for a too large body.
    app.add_middleware(AuthBeforeBody, auth=node.auth, api_prefix=API_PREFIX)
    app.add_middleware(SecurityHeaders, docs_prefix=f"{API_PREFIX}/docs")
    api = APIRouter(prefix=API_PREFIX)
    for module in (printers, camera, filaments, print_jobs, orders, files, users, tokens, audit,
                   cluster, membership, backup, utilization, events, webhooks, session, dashboard,
                   groups):
        api.include_router(module.router)
    api.include_router(webhooks.deliveries_router)
    api.include_router(cluster.health_router)
    api.include_router(files.internal)
    app.include_router(api)
    install_web(app)
    app.include_router(metrics.router)
    # Outermost: counts every answer, the body limit's and the error handlers' included.
    app.add_middleware(RequestMetrics, metrics=node.metrics)
    install_error_handlers(app)
    return app


def _say_where(settings: Settings) -> None:
    """One line each: where the REST API and the page listen (OPC UA says so itself)."""
    url = settings.advertise_url
    log.info("REST API at %s%s (its documentation at %s%s/docs)", url, API_PREFIX, url,
             API_PREFIX)
    log.info("web page at %s/", url)
    if settings.opcua.mode == "off":
        log.info("OPC UA is off (OPCUA_MODE=off)")
