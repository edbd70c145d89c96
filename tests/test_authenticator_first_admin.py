"""A farm with no admin yet: a request with the admin's token waits for the first leader to
create it, longer than a follower's catch-up (a loaded machine can take seconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection

from mes.auth.authenticator import (
    CATCH_UP_SECONDS,
    FIRST_ADMIN_SECONDS,
    Authenticator,
    AuthError,
    AuthUnavailable,
)
from mes.state.users import enabled_admins

TOKEN = "mes_" + "a" * 40
ADMIN_ROW = {"id": "bootstrap-1", "user_id": "admin", "name": "admin", "role": "admin",
             "revoked_at": None, "expires_at": None, "disabled": False}


class FakeState:
    """What the authenticator reads: no admin until `made_at`, then the admin's token."""

    def __init__(self, made_after: float | None) -> None:
        self.started = time.monotonic()
        self.made_after = made_after

    def made(self) -> bool:
        return self.made_after is not None \
            and time.monotonic() - self.started >= self.made_after

    def applied(self) -> int:
        # Something is applied all the time (the leader's own commands), as on a new farm.
        return int((time.monotonic() - self.started) * 100)

    async def read(self, query: Callable[[Connection], Any]) -> Any:
        if query is enabled_admins:
            return 1 if self.made() else 0
        return dict(ADMIN_ROW) if self.made() else None  # the token lookup


async def _unused(token_id: str, now: float) -> None:
    return None


def _authenticator(state: FakeState, catching_up: bool = False) -> Authenticator:
    return Authenticator(state.read, _unused, lambda: catching_up, applied=state.applied,
                         first_admin_token=TOKEN)


async def test_the_admin_made_after_a_catch_up_would_end_is_still_found() -> None:
    state = FakeState(made_after=CATCH_UP_SECONDS + 1.0)
    authenticator = _authenticator(state)
    principal = await authenticator.principal(TOKEN)
    assert principal.role == "admin"
    assert time.monotonic() - state.started >= CATCH_UP_SECONDS + 1.0


async def test_the_admin_token_on_a_farm_never_given_an_admin_is_refused_after_the_wait(
        ) -> None:
    state = FakeState(made_after=None)
    authenticator = _authenticator(state)
    started = time.monotonic()
    with pytest.raises(AuthError, match="not valid"):
        await asyncio.wait_for(authenticator.principal(TOKEN), FIRST_ADMIN_SECONDS + 30)
    assert time.monotonic() - started >= FIRST_ADMIN_SECONDS


async def test_any_other_token_on_a_farm_with_no_admin_waits_only_a_catch_up() -> None:
    state = FakeState(made_after=None)
    authenticator = _authenticator(state)
    started = time.monotonic()
    with pytest.raises(AuthError, match="not valid"):
        await authenticator.principal("mes_" + "b" * 40)
    assert CATCH_UP_SECONDS <= time.monotonic() - started < FIRST_ADMIN_SECONDS


async def test_a_wrong_token_on_a_farm_with_an_admin_is_refused_at_once() -> None:
    async def admin_but_no_such_token(query: Callable[[Connection], Any]) -> Any:
        return 1 if query is enabled_admins else None

    authenticator = Authenticator(admin_but_no_such_token, _unused, lambda: False)
    started = time.monotonic()
    with pytest.raises(AuthError, match="not valid"):
        await authenticator.principal(TOKEN)
    assert time.monotonic() - started < CATCH_UP_SECONDS


async def test_a_node_that_knows_no_leader_says_ask_again_after_a_catch_up() -> None:
    """A restarted node whose peers are away has an empty or old state: a token it does not
    find may well exist. It waits a catch-up (not the first admin's 15 s) and answers that
    it cannot tell now (HTTP 503 with Retry-After), never that the token is not valid."""
    state = FakeState(made_after=None)
    authenticator = Authenticator(state.read, _unused, lambda: True, applied=state.applied,
                                  first_admin_token=TOKEN, unsure=lambda: "no leader is known")
    for token in (TOKEN, "mes_" + "b" * 40):
        started = time.monotonic()
        with pytest.raises(AuthUnavailable, match="no leader is known") as caught:
            await authenticator.principal(token)
        assert CATCH_UP_SECONDS <= time.monotonic() - started < FIRST_ADMIN_SECONDS
        assert caught.value.retry_after == 1
    # Once it can tell (a leader known, caught up), an unknown token is not valid.
    sure = Authenticator(state.read, _unused, lambda: True, applied=state.applied,
                         unsure=lambda: None)
    with pytest.raises(AuthError, match="not valid") as refused:
        await sure.principal("mes_" + "b" * 40)
    assert not isinstance(refused.value, AuthUnavailable)
