"""Dependencies that authenticate a request and check its role (401 and 403 answers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mes.api.consistency import read_consistency
from mes.api.deps import NodeDep, node_of
from mes.api.errors import ApiError
from mes.api.schemas import ERROR_RESPONSES, ErrorOut
from mes.auth.authenticator import AuthError, AuthUnavailable
from mes.auth.principal import Principal

bearer_scheme = HTTPBearer(auto_error=False, description=(
    "An API token (`mes_...`) or, when OpenID Connect is configured, a JWT from the provider"))

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or a bad, expired or revoked one"},
    403: {"model": ErrorOut, "description": "the token's role may not do this"},
}


def _unauthorized(message: str, invalid: bool) -> ApiError:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


# The web page's session: an API token in an HttpOnly cookie (see mes/api/routes/session.py).
SESSION_COOKIE = "mes_session"
# Its name when the node serves HTTPS itself (TLS_CERT_FILE): a browser keeps a `__Host-`
# cookie only if it came over https with Secure, Path=/ and no Domain, so no other service
# of the host name (plain http on another port, a subdomain) can set or replace it, and the
# node then reads no other name.
TLS_SESSION_COOKIE = "__Host-mes_session"
# With cookie authentication a state-changing request must carry this header with this value
# (a cross-site form or image cannot set it): the CSRF rule of cookie clients.
CSRF_HEADER = "X-Requested-With"
CSRF_VALUE = "mes"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_cookie(request: Request) -> str:
    """The session cookie's name on the node serving `request`."""
    tls = node_of(request).settings.http.tls_enabled
    return TLS_SESSION_COOKIE if tls else SESSION_COOKIE


def request_token(request: Request) -> str | None:
    """The token a request authenticates with: the bearer token, else the session cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(session_cookie(request)) or None


async def authenticate(request: Request, node: NodeDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Principal:
    """The user the request's bearer token (or session cookie) proves, or a 401.

    A request authenticated by the cookie that may change state must carry
    `X-Requested-With: mes`, else 403: a page of another site cannot set that header.
    """
    by_cookie = credentials is None
    token = request.cookies.get(session_cookie(request)) if credentials is None \
        else credentials.credentials
    if not token:
        raise _unauthorized("this needs a token: send 'Authorization: Bearer <token>'", False)
    try:
        who = await node.auth.principal(token)
    except AuthUnavailable as exc:
        raise ApiError(503, "not_ready", str(exc),
                       headers={"Retry-After": str(exc.retry_after)}) from None
    except AuthError as exc:
        raise _unauthorized(str(exc), True) from None
    if by_cookie and request.method not in SAFE_METHODS and \
            request.headers.get(CSRF_HEADER, "").lower() != CSRF_VALUE:
        raise ApiError(403, "csrf_header_missing",
                       f"a request signed in by the session cookie that changes state must "
                       f"send the header '{CSRF_HEADER}: {CSRF_VALUE}'", CSRF_HEADER)
    return who


def require(role: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through `role` and the roles above it, else answers 403."""

    async def check(who: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not who.at_least(role):
            raise ApiError(403, "forbidden", f"this needs the {role} role; "
                           f"{who.name!r} has the {who.role} role")
        return who

    return check


Caller = Annotated[Principal, Depends(authenticate)]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def authenticated_router(prefix: str, tag: str) -> APIRouter:
    """A router whose every route needs a valid token (routes may then require a role)."""
    return APIRouter(prefix=prefix, tags=[tag], responses={**ERROR_RESPONSES, **UNAUTHORIZED},
                     dependencies=[Depends(authenticate), Depends(read_consistency)])
