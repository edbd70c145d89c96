"""The one door through which every interface submits a command on a principal's behalf."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

from mes.app.errors import DomainError
from mes.app.quotas import Check
from mes.app.raft_index import note_index
from mes.auth.principal import Principal
from mes.raft.writer import NoLeader, NotReady
from mes.state.machine import Outcome, was_applied
from mes.versions import NotUpgraded

T = TypeVar("T")


class CommandWriter(Protocol):
    """What replicates a command (`mes.raft.writer.Writer`)."""

    async def submit(self, op: str, args: Mapping[str, Any], request_id: str | None = None,
                     remember: bool = True, actor: str | None = None) -> Outcome: ...


def request_id_of(op: str, args: Mapping[str, Any], actor: str | None, key: str) -> str:
    """The request a key names: one request of one user on one target (the same key on
    another target, or from another user, is another request and never answers with
    someone else's outcome)."""
    target = "" if op.endswith(".create") else f":{args.get('id', '')}"
    return f"{op}{target}:{actor or ''}:{key}"


class CommandDoor:
    """Submits commands as a principal: quotas first, then Raft, then the outcome."""

    def __init__(self, writer: CommandWriter,
                 read: Callable[[Callable[[Connection], Any]], Awaitable[Any]]) -> None:
        self._writer = writer
        self._read = read

    async def submit(self, op: str, args: dict[str, Any], by: Principal | None,
                     key: str | None = None, quota: Check | None = None) -> Any:
        """Replicate `op` on behalf of `by` and return its value once applied here.

        Raises `DomainError`: the state machine's refusal, `quota` when a `user` reached
        `quota` (never for a retry of an applied request), `unavailable` when no leader
        committed it in time (its `retry_key` makes a retry apply at most once). A write
        without `key` gets one here, so that the caller can be told it.
        """
        key = key or uuid.uuid4().hex
        actor = by.user_id if by is not None else None
        request_id = request_id_of(op, args, actor, key)
        if quota is not None and by is not None and not by.staff:
            await self._within(quota, by.user_id, request_id)
        try:
            outcome = await self._writer.submit(op, args, request_id, actor=actor)
        except NotReady as exc:
            raise DomainError("unavailable", "not_ready", str(exc)) from None
        except NotUpgraded as exc:  # nothing was submitted: a plain refusal
            raise DomainError("rule", "cluster_not_upgraded", str(exc), exc.field) from None
        except NoLeader as exc:
            raise DomainError("unavailable", "no_leader",
                              f"outcome unknown: {exc}; the write may still be applied",
                              retry_key=key) from None
        note_index(outcome.index)
        if outcome.error is not None:
            if outcome.error.get("code") == "idempotency_key_reused":
                raise DomainError("invalid", "idempotency_key_reused",
                                  f"Idempotency-Key {key!r} was already used for a different "
                                  "request; use a new key for a new request", "idempotency-key")
            raise DomainError.from_outcome(outcome.error)
        return outcome.value

    async def applied(self, op: str, args: dict[str, Any], by: Principal | None,
                      key: str) -> bool:
        """Whether the request that `key` names (of `by`, for `op` on `args`'s target) was
        applied: its retry will answer with the stored outcome."""
        request_id = request_id_of(op, args, by.user_id if by is not None else None, key)
        return bool(await self._read(lambda conn: was_applied(conn, request_id)))

    async def _within(self, quota: Check, user_id: str, request_id: str) -> None:
        def query(conn: Connection) -> str | None:
            if was_applied(conn, request_id):
                return None  # a retry: its stored outcome answers it
            return quota(conn, user_id)

        message = await self._read(query)
        if message is not None:
            raise DomainError("quota", "quota_exceeded", message)
