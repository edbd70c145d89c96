"""Dependencies that authenticate a request and check its role (401 and 403 answers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mes.api.consistency import read_consistency
from mes.api.deps import NodeDep
from mes.api.errors import ApiError
from mes.api.schemas import ERROR_RESPONSES, ErrorOut
from mes.auth.authenticator import AuthError
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


async def authenticate(node: NodeDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Principal:
    """The user the request's bearer token proves, or a 401."""
    if credentials is None:
        raise _unauthorized("this needs a token: send 'Authorization: Bearer <token>'", False)
    try:
        return await node.auth.principal(credentials.credentials)
    except AuthError as exc:
        raise _unauthorized(str(exc), True) from None


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
