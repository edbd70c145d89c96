"""OpenID Connect sign-in: a verified JWT's subject is a user, created on first sight."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection

from mes.auth.authenticator import AuthError
from mes.auth.oidc import OidcError, OidcIdentity, OidcVerifier, looks_like_jwt
from mes.auth.principal import Principal
from mes.state.credentials import user_by_oidc_subject
from mes.state.machine import Outcome
from mes.state.ops import Op

Reader = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
Submitter = Callable[[str, dict[str, Any]], Awaitable[Outcome]]
_EMAIL_LIMIT = 320


def user_id_for(subject: str) -> str:
    """The user id of an OpenID Connect subject (stable, and valid whatever `sub` holds)."""
    return "oidc-" + hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _clean(text: str | None, limit: int) -> str | None:
    if not text:
        return None
    cleaned = "".join(c for c in text if c.isprintable())[:limit].strip()
    return cleaned or None


class OidcUsers:
    """Turns a provider's JWT into a Principal; the user is created (role `user`, or the
    role claim's) the first time its subject is seen, and follows the claim afterwards."""

    def __init__(self, verifier: OidcVerifier, read: Reader, submit: Submitter) -> None:
        self._verifier = verifier
        self._read = read
        self._submit = submit

    def handles(self, token: str) -> bool:
        """Whether the token is a JWT (ours are `mes_...`)."""
        return looks_like_jwt(token)

    async def principal(self, token: str) -> Principal:
        """The user a valid JWT proves, or AuthError with the provider check that failed."""
        try:
            identity = await self._verifier.verify(token)
        except OidcError as exc:
            raise AuthError(f"the OpenID Connect token was refused: {exc.reason}") from None
        row = await self._read(lambda c: user_by_oidc_subject(c, identity.subject))
        if row is None or (identity.role is not None and identity.role != row["role"]):
            row = await self._sign_in(identity)
        if row["disabled"]:
            raise AuthError("this account is disabled")
        return Principal(row["id"], row["name"], row["role"])

    async def _sign_in(self, identity: OidcIdentity) -> dict[str, Any]:
        subject = identity.subject[:300]
        name = _clean(identity.name, 200) or _clean(identity.email, 200) or user_id_for(subject)
        args: dict[str, Any] = {"id": user_id_for(subject), "subject": subject, "name": name,
                                "role": identity.role}
        email = _clean(identity.email, _EMAIL_LIMIT)
        if email is not None and "@" in email and " " not in email:
            args["email"] = email
        try:
            outcome = await self._submit(Op.USER_OIDC_LOGIN, args)
        except Exception as exc:  # no leader: the user cannot be created right now
            raise AuthError(f"cannot sign in a new OpenID Connect user now: {exc}") from None
        if outcome.error is not None and outcome.error.get("field") == "email":
            args.pop("email")
            outcome = await self._submit(Op.USER_OIDC_LOGIN, args)
        if outcome.error is not None:
            raise AuthError(f"cannot sign in this OpenID Connect user: "
                            f"{outcome.error['message']}")
        value: dict[str, Any] = outcome.value
        return value
