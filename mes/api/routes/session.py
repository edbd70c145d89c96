"""`/api/v1/session`: the web page's sign-in, as an API token in an HttpOnly cookie.

A password sign-in makes an API token for the user through the replicated token command
(named "web session", valid SESSION_HOURS) and puts it in the cookie; signing out revokes
it. A sign-in with an existing API token only puts that token in the cookie (signing out
then keeps the token). Cookie requests that change state need `X-Requested-With: mes`.

The cookie is `mes_session`, or `__Host-mes_session` when the node serves HTTPS itself. It
is the bearer token and nothing else: a browser sends it to every service of the same host
name whatever the port, and whatever else such a service sees (User-Agent, other cookies)
it could replay as well, so no stateless binding would stop it (see docs/configuration.md,
"HTTPS and reverse proxies", and docs/security.md).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, model_validator

from mes.api.auth import (
    TLS_SESSION_COOKIE,
    UNAUTHORIZED,
    Caller,
    authenticate,
    session_cookie,
)
from mes.api.deps import NodeDep, commit, new_id, node_of, read
from mes.api.errors import ApiError
from mes.api.schemas import ERROR_RESPONSES, Timestamp, _Input
from mes.auth.authenticator import AuthError
from mes.auth.passwords import MAX_NAME, MAX_PASSWORD, PasswordCheck
from mes.auth.principal import Principal
from mes.auth.secrets import new_token, token_hash
from mes.auth.throttle import TooManyAttempts
from mes.state.ops import Op
from mes.state.users import SESSION_TOKEN_NAME, get_token

SESSION_SECONDS = 12 * 3600

router = APIRouter(prefix="/session", tags=["session"], responses=ERROR_RESPONSES)


class SessionIn(_Input):
    """Either `name` and `password`, or an API `token`."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME)] | None = None
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD)] | None = None
    token: Annotated[str, Field(min_length=1, max_length=4096)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> SessionIn:
        by_password = self.name is not None and self.password is not None
        if by_password == (self.token is not None) or (
                self.token is not None and (self.name or self.password)):
            raise ValueError("send either name and password, or token")
        return self


class SessionUser(BaseModel):
    """Who is signed in."""

    id: str
    name: str
    role: Literal["user", "operator", "admin"]


class SessionOut(BaseModel):
    """The signed-in user and how the session was made."""

    user: SessionUser
    method: Literal["password", "token", "bearer"] = Field(description=(
        "password: a web session token made at sign-in (revoked at sign-out); token: an API "
        "token given at sign-in; bearer: the request's Authorization header, no cookie"))
    expires_at: Timestamp | None
    max_upload_bytes: int = Field(description=(
        "the largest G-code file this node accepts, so that a client can say so before "
        "sending one"))


def _checker(request: Request) -> PasswordCheck:
    """The node's sign-in guard, as a check of this request's name and password."""
    guard = node_of(request).sign_in
    source = request.client.host if request.client else None

    async def check(login: str, password: str) -> Principal | None:
        try:
            who: Principal | None = await guard.check(login, password, source)
        except TooManyAttempts as exc:
            raise ApiError(429, "too_many_attempts", str(exc),
                           headers={"Retry-After": str(exc.retry_after)}) from None
        return who

    return check


def _cookie(request: Request) -> tuple[str, bool]:
    """The cookie's name and whether it is Secure: `__Host-mes_session`, always Secure, when
    this node serves HTTPS itself; else `mes_session`, Secure when the request came over
    https (as a trusted proxy's X-Forwarded-Proto says)."""
    name = session_cookie(request)
    return name, name == TLS_SESSION_COOKIE or request.url.scheme == "https"


def _set_cookie(request: Request, response: Response, token: str, max_age: int | None) -> None:
    name, secure = _cookie(request)
    response.set_cookie(name, token, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=secure)


def _clear_cookie(request: Request, response: Response) -> None:
    name, secure = _cookie(request)
    response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=secure)


def _user(who: Principal) -> dict[str, Any]:
    return {"id": who.user_id, "name": who.name, "role": who.role}


def _wrong_login(message: str) -> ApiError:
    return ApiError(401, "invalid_credentials", message,
                    headers={"WWW-Authenticate": "Bearer"})


@router.post("", response_model=SessionOut)
async def sign_in(body: SessionIn, request: Request, response: Response,
                  node: NodeDep) -> Any:
    """Sign in with `name` and `password` (a 12-hour web session token is made) or with an
    API `token`; the answer sets the HttpOnly `mes_session` cookie (`__Host-mes_session`
    when the node serves HTTPS itself). Wrong credentials: 401."""
    if body.token is not None:
        try:
            who = await node.auth.principal(body.token)
        except AuthError as exc:
            raise _wrong_login(str(exc)) from None
        record = (await read(node, lambda c: get_token(c, who.token_id or ""))
                  if who.token_id else None)
        expires = record["expires_at"] if record else None
        max_age = None if expires is None else max(1, int(expires - time.time()))
        _set_cookie(request, response, body.token, max_age)
        return {"user": _user(who), "method": "token", "expires_at": expires,
                "max_upload_bytes": _max_upload(node)}
    assert body.name is not None and body.password is not None
    found = await _checker(request)(body.name, body.password)
    if found is None:
        raise _wrong_login("wrong user name or password")
    token = new_token()
    expires_at = time.time() + SESSION_SECONDS
    await commit(node, Op.TOKEN_CREATE, {
        "id": new_id(), "user_id": found.user_id, "name": SESSION_TOKEN_NAME,
        "token_hash": token_hash(token), "expires_at": expires_at}, None, found)
    _set_cookie(request, response, token, SESSION_SECONDS)
    return {"user": _user(found), "method": "password", "expires_at": expires_at,
            "max_upload_bytes": _max_upload(node)}


@router.get("", response_model=SessionOut, responses=UNAUTHORIZED)
async def current(request: Request, node: NodeDep, who: Caller) -> Any:
    """Who the request signs in as (by the cookie, or by a bearer token)."""
    by_cookie = "authorization" not in request.headers
    record = (await read(node, lambda c: get_token(c, who.token_id or ""))
              if who.token_id else None)
    method = "bearer"
    if by_cookie:
        method = "password" if record and record["name"] == SESSION_TOKEN_NAME else "token"
    return {"user": _user(who), "method": method,
            "expires_at": record["expires_at"] if record else None,
            "max_upload_bytes": _max_upload(node)}


def _max_upload(node: NodeDep) -> int:
    return node.settings.http.max_upload_mb * 2**20


@router.delete("", status_code=204, responses=UNAUTHORIZED,
               dependencies=[Depends(authenticate)])
async def sign_out(request: Request, node: NodeDep, who: Caller) -> Response:
    """Sign out: clear the cookie and revoke the cookie's token if sign-in made it (an API
    token given at sign-in stays valid). Cookie clients send `X-Requested-With: mes`."""
    response = Response(status_code=204)
    if "authorization" not in request.headers and who.token_id:
        record = await read(node, lambda c: get_token(c, who.token_id or ""))
        if record is not None and record["name"] == SESSION_TOKEN_NAME \
                and record["revoked_at"] is None:
            await commit(node, Op.TOKEN_REVOKE, {"id": who.token_id}, None, who)
    _clear_cookie(request, response)
    return response
