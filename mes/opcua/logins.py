"""How a sign-in's user name appears in the log: never a secret pasted into it."""

from __future__ import annotations

from mes.auth.secrets import TOKEN_PREFIX


def shown_login(login: str | None) -> str:
    """A user name as logged: at most 64 characters, and never a token (a mes token or a
    JWT) pasted into it."""
    if login is None:
        return ""
    if login.startswith(TOKEN_PREFIX) or (login.count(".") == 2 and len(login) > 40):
        return "(a token, not shown)"
    return login[:64]
