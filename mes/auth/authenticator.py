"""From a bearer token to a Principal, on any node, without a database read per request.

Tokens are looked up by their SHA-256 in the replicated state and cached on the node; the
cache is emptied whenever an applied command changes a user or a token, so a revocation
counts from the moment this node applies it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import Connection

from mes.auth.principal import Principal
from mes.auth.secrets import TOKEN_PREFIX, token_hash
from mes.state.credentials import token_by_hash
from mes.state.machine import Outcome
from mes.state.users import enabled_admins

log = logging.getLogger(__name__)

# A token this node does not know yet may have been created on another node a moment ago:
# a follower (or a node with no admin yet) looks again for this long before refusing it.
CATCH_UP_SECONDS = 2.0
# A farm with no admin yet: its first leader is creating one (from MES_ADMIN_TOKEN), which on
# a loaded machine can take longer than a catch-up; a request with that token (no other)
# waits for it this long.
FIRST_ADMIN_SECONDS = 15.0
CATCH_UP_STEP = 0.05
# A token's last use is committed at most this often per token and node.
LAST_USED_EVERY = 60.0
MAX_TOKEN_LENGTH = 4096

class AuthError(Exception):
    """The credentials prove nobody; the message says why, without revealing a secret."""


class AuthUnavailable(AuthError):
    """This node cannot tell now: the token is not in its state, and its state may be
    behind (it knows no leader, or is catching up). Another node, or this one a moment
    later, can tell (HTTP: 503 with Retry-After)."""

    retry_after = 1


class OidcLogin(Protocol):
    """Verifies an OpenID Connect JWT and answers the user it maps to."""

    def handles(self, token: str) -> bool: ...

    async def principal(self, token: str) -> Principal: ...


Reader = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
Recorder = Callable[[str, float], Awaitable[None]]


class Authenticator:
    """Answers who a bearer token belongs to; one per node."""

    def __init__(self, read: Reader, record_use: Recorder, catch_up: Callable[[], bool],
                 oidc: OidcLogin | None = None,
                 applied: Callable[[], int] = lambda: 0,
                 first_admin_token: str | None = None,
                 unsure: Callable[[], str | None] = lambda: None) -> None:
        """`first_admin_token`: MES_ADMIN_TOKEN, the token a farm with no admin yet is
        about to know (only a request with it waits for that, FIRST_ADMIN_SECONDS);
        `unsure`: why this node's state may be behind now (None: it is not)."""
        self._unsure = unsure
        self._first_admin = token_hash(first_admin_token) if first_admin_token else None
        self._read = read
        self._applied = applied
        self._record_use = record_use
        self._catch_up = catch_up
        self.oidc = oidc
        self._cache: dict[str, dict[str, Any]] = {}
        self._last_recorded: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    def on_apply(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        """State-machine listener: forget cached tokens when users or tokens change."""
        if any(e.entity in ("user", "api_token") for e in outcome.events):
            self._cache.clear()

    async def principal(self, token: str, fresh: bool = False) -> Principal:
        """The user a bearer token proves, or AuthError. `fresh`: read the applied state,
        not the cache (which a change is cleared from on the applying thread, possibly just
        after the caller heard of it)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("the bearer token is not valid")
        if not token.startswith(TOKEN_PREFIX) and self.oidc is not None \
                and self.oidc.handles(token):
            return await self.oidc.principal(token)
        digest = token_hash(token)
        row = (None if fresh else self._cache.get(digest)) or await self._lookup(digest)
        if row is None:
            raise AuthError("the bearer token is not valid")
        now = time.time()
        if row["revoked_at"] is not None:
            raise AuthError("the bearer token was revoked")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise AuthError("the bearer token has expired")
        if row["disabled"]:
            raise AuthError("this account is disabled")
        self._note_use(row["id"], now)
        return Principal(row["user_id"], row["name"], row["role"], row["id"])

    async def _lookup(self, digest: str) -> dict[str, Any] | None:
        row: dict[str, Any] | None = await self._read(lambda c: token_by_hash(c, digest))
        wait = 0.0
        unsure = self._unsure() if row is None else None
        if row is None:
            if digest == self._first_admin and await self._read(enabled_admins) == 0:
                # The first leader is creating it; with no leader known (a restarted node
                # whose peers are away), a catch-up's wait, then "ask again".
                wait = CATCH_UP_SECONDS if unsure else FIRST_ADMIN_SECONDS
            elif self._catch_up() or await self._read(enabled_admins) == 0:
                wait = CATCH_UP_SECONDS
        if wait:
            deadline = time.monotonic() + wait
            seen = self._applied()
            while row is None and time.monotonic() < deadline:
                await asyncio.sleep(CATCH_UP_STEP)
                if self._applied() == seen:
                    continue  # nothing applied since the last look: nothing new to find
                seen = self._applied()
                row = await self._read(lambda c: token_by_hash(c, digest))
        if row is not None:
            self._cache[digest] = row
        elif unsure and (reason := self._unsure()):
            raise AuthUnavailable(f"this node cannot check the token now ({reason}): "
                                  "try again, or another node")
        return row

    def _note_use(self, token_id: str, now: float) -> None:
        if now - self._last_recorded.get(token_id, 0.0) < LAST_USED_EVERY:
            return
        self._last_recorded[token_id] = now
        task = asyncio.create_task(self._record_quietly(token_id, now))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _record_quietly(self, token_id: str, now: float) -> None:
        try:
            await self._record_use(token_id, now)
        except Exception as exc:  # a lost last-used time is harmless; never fail a request
            log.debug("could not record the use of token %s: %r", token_id, exc)

    async def aclose(self) -> None:
        """Wait for pending last-used records."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
