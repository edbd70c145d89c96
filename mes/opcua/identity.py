"""Who an OPC UA session signs in as: a farm account, by user name (or id) and password."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mes.auth.passwords import MAX_NAME, MAX_PASSWORD, find_user, verify
from mes.auth.principal import Principal
from mes.auth.throttle import TooManyAttempts

if TYPE_CHECKING:
    from mes.app.ports import Farm
    from mes.opcua.security import PasswordCheck

log = logging.getLogger(__name__)
__all__ = ["MAX_NAME", "MAX_PASSWORD", "find_user", "password_check", "verify"]


def password_check(node: Farm) -> PasswordCheck:
    """A PasswordCheck against `node`'s replicated users table, argon2 off the event loop,
    through the node's sign-in guard (the same backoff and queue bound as REST).

    Refused: unknown users, wrong passwords, disabled users and users without a password,
    and any sign-in the guard does not check now.
    """
    guard = node.sign_in

    async def check(login: str, password: str) -> Principal | None:
        try:
            who: Principal | None = await guard.check(login, password, interface="opcua")
        except TooManyAttempts as exc:
            log.warning("OPC UA sign-in of %r not checked: %s", login[:64], exc)
            return None
        return who

    return check
