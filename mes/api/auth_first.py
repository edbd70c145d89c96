"""Nothing is read before it is allowed: a request that may carry a body is authenticated
from its headers alone, before the route reads (or FastAPI parses) a byte of the body.

FastAPI parses a form (an upload) before it runs the route's dependencies, so without this
an anonymous client had a 150 MB upload received and spooled before its 401. Public routes
with a body (signing in; the nodes' internal blob copies, which check the cluster token
before they stream) are left to their own checks; the route authenticates again as always.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mes.api.auth import SAFE_METHODS, request_token
from mes.api.errors import error_body
from mes.auth.authenticator import Authenticator, AuthError, AuthUnavailable


class AuthBeforeBody:
    """ASGI middleware: 401 for a request with a body and no valid token, before the body."""

    def __init__(self, app: ASGIApp, auth: Authenticator, api_prefix: str) -> None:
        self.app = app
        self.auth = auth
        self.prefix = api_prefix
        self.public = (f"{api_prefix}/session", f"{api_prefix}/internal/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] in SAFE_METHODS
                or not scope["path"].startswith(self.prefix + "/")
                or scope["path"].rstrip("/").startswith(self.public)):
            await self.app(scope, receive, send)
            return
        token = request_token(Request(scope))
        problem = None
        if not token:
            problem = ("this needs a token: send 'Authorization: Bearer <token>'", "Bearer")
        else:
            try:
                await self.auth.principal(token)
            except AuthUnavailable as exc:
                answer = JSONResponse(error_body("not_ready", str(exc)), 503, headers={
                    "Retry-After": str(exc.retry_after), "Connection": "close"})
                await answer(scope, receive, send)
                return
            except AuthError as exc:
                problem = (str(exc), 'Bearer error="invalid_token"')
        if problem is None:
            await self.app(scope, receive, send)
            return
        message, challenge = problem
        # Connection: close, so that the unread body is not taken as the next request.
        answer = JSONResponse(error_body("unauthorized", message), 401,
                              headers={"WWW-Authenticate": challenge, "Connection": "close"})
        await answer(scope, receive, send)
