"""The session caps of mes.opcua.session_limits, on stand-in sessions (state and age)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.server.internal_session import SessionState

from mes.auth.principal import Principal
from mes.opcua.session_limits import (
    ANONYMOUS,
    UNSIGNED,
    UNSIGNED_SECONDS,
    admit_anonymous,
    admit_unsigned,
    is_anonymous,
)


@dataclass
class Stub:
    state: SessionState
    created_at: float = 0.0
    principal: Any = None


def test_unsigned_sessions_are_capped_while_recent() -> None:
    waiting = [Stub(SessionState.Created, created_at=100.0) for _ in range(UNSIGNED - 1)]
    admit_unsigned(waiting, now=101.0)  # one below the cap
    with pytest.raises(ServiceError) as refused:
        admit_unsigned([*waiting, Stub(SessionState.Created, 100.0)], now=101.0)
    assert refused.value.code == ua.StatusCodes.BadTooManySessions
    # Old ones (their clients went away or are slow) and signed-in ones do not count.
    admit_unsigned([*waiting, Stub(SessionState.Created, 100.0)],
                   now=100.0 + UNSIGNED_SECONDS + 1)
    admit_unsigned([Stub(SessionState.Activated) for _ in range(UNSIGNED * 2)], now=0.0)


def test_anonymous_sessions_are_capped() -> None:
    someone = Principal("u1", "alice", "user", None)
    signed = [Stub(SessionState.Activated) for _ in range(ANONYMOUS - 1)]
    asking = Stub(SessionState.Created)
    admit_anonymous([*signed, asking, Stub(SessionState.Activated, principal=someone)], asking)
    with pytest.raises(ServiceError) as refused:
        admit_anonymous([*signed, Stub(SessionState.Activated), asking], asking)
    assert refused.value.code == ua.StatusCodes.BadTooManySessions


def test_which_tokens_are_anonymous() -> None:
    assert is_anonymous(ua.AnonymousIdentityToken())
    assert is_anonymous(None)
    assert is_anonymous(ua.ExtensionObject(TypeId=ua.NodeId(ua.ObjectIds.Null)))
    assert not is_anonymous(ua.UserNameIdentityToken(UserName="alice"))
    assert not is_anonymous(ua.X509IdentityToken())
