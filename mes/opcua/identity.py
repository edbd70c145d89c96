"""Who an OPC UA session signs in as: a farm account, by user name (or id) and password, or
by one of its API tokens (or an OpenID Connect JWT the node accepts) given as the password.

An account made with a token only (the first admin is) has no password: its token is how it
signs in, in UaExpert too (user name `admin`, the token as the password). Every refusal is
logged with its reason, never with the secret. Sessions of one account that sign in at
once (several connections of one client, reconnecting after a restart) wait their turn for
the sign-in guard's one check per account instead of being refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from mes.auth.authenticator import AuthError
from mes.auth.passwords import MAX_NAME, MAX_PASSWORD, find_user, verify
from mes.auth.principal import Principal
from mes.auth.secrets import TOKEN_PREFIX
from mes.auth.throttle import TooManyAttempts
from mes.opcua.logins import shown_login

if TYPE_CHECKING:
    from mes.app.ports import Farm
    from mes.opcua.security import PasswordCheck

log = logging.getLogger(__name__)
# How long a sign-in waits while other sign-ins of its account are being checked, and how
# often it looks again (a password check takes about 0.2 s).
BUSY_PATIENCE = 10.0
BUSY_POLL = 0.05
__all__ = ["MAX_NAME", "MAX_PASSWORD", "find_user", "password_check", "shown_login", "verify"]


def password_check(node: Farm) -> PasswordCheck:
    """A PasswordCheck against `node`'s replicated users table, argon2 off the event loop,
    through the node's sign-in guard (the same backoff and queue bound as REST); a password
    that is a token is checked as REST checks a bearer token.

    Refused: unknown users, wrong passwords, disabled users and users without a password,
    tokens not valid or not the named user's, and any sign-in the guard does not check now.
    """
    guard = node.sign_in

    async def check(login: str, password: str) -> Principal | None:
        if _looks_like_token(node, password):
            who = await _by_token(node, login, password)
            if who is not None:
                return who
        deadline = time.monotonic() + BUSY_PATIENCE
        while True:
            try:
                found: Principal | None = await guard.check(login, password,
                                                             interface="opcua")
                break
            except TooManyAttempts as exc:
                # A client does not retry a refused ActivateSession: while only the line is
                # full (several sessions of one account signing in at once, as after a
                # restart), this sign-in waits its turn a while instead.
                if exc.busy and time.monotonic() < deadline:
                    await asyncio.sleep(BUSY_POLL)  # a pace, not a wait for a state
                    continue
                log.warning("OPC UA sign-in of %r not checked: %s", shown_login(login), exc)
                return None
        if found is None:
            log.warning("OPC UA sign-in of %r refused: %s", shown_login(login),
                        await _why_refused(node, login))
        return found

    return check


def _looks_like_token(node: Farm, secret: str) -> bool:
    oidc = node.auth.oidc
    return secret.startswith(TOKEN_PREFIX) or (oidc is not None and oidc.handles(secret))


async def _by_token(node: Farm, login: str, token: str) -> Principal | None:
    """The token's user when the token is valid and `login` is empty or that user's name or
    id; None (logged) otherwise."""
    try:
        who = await node.auth.principal(token)
    except AuthError as exc:
        log.warning("OPC UA sign-in of %r with a token refused: %s", shown_login(login), exc)
        return None
    if login and login.casefold() not in (who.name.casefold(), who.user_id.casefold()):
        log.warning("OPC UA sign-in of %r refused: the token given is another user's",
                    shown_login(login))
        return None
    return who


async def _why_refused(node: Farm, login: str) -> str:
    if not login or len(login) > MAX_NAME:
        return "no user name"
    user: dict[str, Any] | None = await node.read(lambda conn: find_user(conn, login))
    if user is None:
        return "no such user"
    if user["disabled"]:
        return "the account is disabled"
    if not user["password_hash"]:
        return ("the account has no password: sign in with one of its API tokens as the "
                "password")
    return "wrong password (or too long)"
