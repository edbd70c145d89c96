"""Who an OPC UA session signs in as: a farm account, by user name (or id) and password."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mes.auth import passwords
from mes.auth.passwords import MAX_NAME, MAX_PASSWORD, find_user, verify

if TYPE_CHECKING:
    from mes.node import FarmNode
    from mes.opcua.security import PasswordCheck

__all__ = ["MAX_NAME", "MAX_PASSWORD", "find_user", "password_check", "verify"]


def password_check(node: FarmNode) -> PasswordCheck:
    """A PasswordCheck against `node`'s replicated users table, argon2 off the event loop.

    Refused: unknown users, wrong passwords, disabled users and users without a password.
    """
    return passwords.password_check(node.read)
