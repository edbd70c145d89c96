"""How many sessions a stranger may hold, and sessions that end with their account.

- **Not yet signed in.** A CreateSession without ActivateSession holds a session that
  asyncua never times out (its watchdog starts at activation). At most UNSIGNED of them,
  created within the last UNSIGNED_SECONDS, may exist at once; more are refused with
  Bad_TooManySessions (older ones no longer count: their connection closing ends them).
- **Anonymous.** Where anonymous sessions are allowed, at most ANONYMOUS are activated at
  once (asyncua caps all activated sessions at 1,000).
- **Accounts that change.** When a command that changed a user is applied (disabled,
  deleted, or given another role), that user's sessions are closed: the next request of
  the client is answered Bad_SessionIdInvalid and it must sign in again, with what the
  account is now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.server.internal_session import SessionState
from sqlalchemy import Connection

from mes.app.ports import ChangeFeed
from mes.state.machine import Outcome
from mes.state.users import get_user

log = logging.getLogger(__name__)

UNSIGNED = 50
UNSIGNED_SECONDS = 30.0
ANONYMOUS = 100

Reader = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


def admit_unsigned(sessions: Iterable[Any], now: float | None = None) -> None:
    """Refuse a new session while UNSIGNED recent ones are still not signed in."""
    now = time.monotonic() if now is None else now
    waiting = sum(1 for s in sessions if s.state == SessionState.Created
                  and now - getattr(s, "created_at", now) < UNSIGNED_SECONDS)
    if waiting >= UNSIGNED:
        log.warning("refused an OPC UA session: %d sessions are waiting to sign in", waiting)
        raise ServiceError(ua.StatusCodes.BadTooManySessions)


def is_anonymous(token: Any) -> bool:
    """Whether an ActivateSession's identity token asks for an anonymous session."""
    if isinstance(token, ua.ExtensionObject) and token.TypeId == ua.NodeId(ua.ObjectIds.Null):
        return True  # Part 4 5.6.3: an empty token means anonymous
    return token is None or isinstance(token, ua.AnonymousIdentityToken)


def admit_anonymous(sessions: Iterable[Any], asking: Any) -> None:
    """Refuse one more anonymous session once ANONYMOUS are signed in."""
    signed = sum(1 for s in sessions if s is not asking and s.state == SessionState.Activated
                 and getattr(s, "principal", None) is None)
    if signed >= ANONYMOUS:
        log.warning("refused an anonymous OPC UA session: %d are open", signed)
        raise ServiceError(ua.StatusCodes.BadTooManySessions)


class AccountSessions:
    """Closes the sessions of users whose account a command changed (disabled, deleted,
    another role), on the OPC UA server's loop."""

    def __init__(self, feed: ChangeFeed, read: Reader,
                 sessions: Callable[[], Iterable[Any]]) -> None:
        self.feed = feed
        self._read = read
        self._sessions = sessions
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> None:
        """Listen to the state machine (call on the server's event loop)."""
        self._loop = asyncio.get_running_loop()
        self.feed.on_apply(self.listener)

    def detach(self) -> None:
        self._loop = None

    def listener(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        """Raft thread: users a command changed go to the server's loop."""
        loop = self._loop
        users = {e.entity_id for e in outcome.events if e.entity == "user"}
        if loop is None or not users:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(lambda: loop.create_task(self.check(users)))

    async def check(self, user_ids: set[str]) -> int:
        """Close the sessions of these users whose account no longer is what they signed
        in as; how many were closed."""
        open_ = [s for s in self._sessions() if s.state != SessionState.Closed
                 and (who := getattr(s, "principal", None)) is not None
                 and who.user_id in user_ids]
        closed = 0
        accounts: dict[str, dict[str, Any] | None] = {}
        for session in open_:
            who = session.principal
            if who.user_id not in accounts:
                accounts[who.user_id] = await self._read(partial(get_user, user_id=who.user_id))
            account = accounts[who.user_id]
            if account is None or account["disabled"] or account["role"] != who.role:
                reason = ("deleted" if account is None else "disabled" if account["disabled"]
                          else f"now {account['role']}")
                log.info("closed the OPC UA session of %s: the account is %s", who.name,
                         reason)
                await session.close_session(delete_subs=True)
                closed += 1
        return closed
