"""Submitting commands from asyncio: answer only once committed and applied on this node."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pysyncobj import FAIL_REASON

from mes.state.commands import current_version
from mes.state.machine import Outcome

log = logging.getLogger(__name__)

Pending = asyncio.Future[tuple[Any, int]]
Gate = Callable[[str, Mapping[str, Any]], tuple[int, dict[str, Any]]]

# How long one attempt may wait before it is retried with the same request id.
ATTEMPT_TIMEOUT = 1.0
# How long a write waits for a leader to become known (an election takes 0.3-0.6 s) before
# it is answered: a node cut off from the majority says so at once, not after the timeout.
NO_LEADER_WAIT = 1.5


class NoLeader(Exception):
    """No leader committed the command within the write timeout; it may still commit later."""


class NotReady(NoLeader):
    """This node cannot take writes now (it is catching up); nothing was submitted."""


class CommandApplier(Protocol):
    """Anything with pysyncobj's asynchronous replicated-call signature."""

    def apply_command(self, command: Mapping[str, Any], callback: Any) -> None: ...


def new_request_id() -> str:
    """A fresh request id for a command that a client did not give one."""
    return uuid.uuid4().hex


class Writer:
    """Turns commands into committed outcomes, retrying idempotently until a deadline."""

    def __init__(self, node: CommandApplier, timeout: float,
                 gate: Gate | None = None,
                 unready: Callable[[], str | None] | None = None) -> None:
        self._node = node
        self._timeout = timeout
        # Why this node cannot take writes now (None: it can): a node far behind the leader
        # would apply the command only once caught up, so its client would wait for nothing.
        self._unready = unready
        # The format (and the arguments in it) the cluster version allows for an op; raises
        # (mes.versions.NotUpgraded) when it allows none yet.
        self._gate = gate

    async def submit(self, op: str, args: Mapping[str, Any], request_id: str | None = None,
                     remember: bool = True, actor: str | None = None) -> Outcome:
        """Replicate one command; raise NoLeader if nothing committed it within the timeout
        (sooner when no leader is known: NO_LEADER_WAIT), NotReady at once when this node is
        catching up.

        With `remember` false (commands whose repetition is harmless, such as telemetry)
        no request id is stored, so retries may apply it twice. `actor` is the user whose
        request this is (None: the farm itself); apply checks their role and audits it.
        """
        reason = self._unready() if self._unready is not None else None
        if reason is not None:
            raise NotReady(f"this node cannot take writes now: {reason}")
        version, plain = (self._gate(op, args) if self._gate is not None
                          else (current_version(op), dict(args)))
        rid = (request_id or new_request_id()) if remember else None
        # `v`: the format it is written in, so that every node gives the command the meaning
        # it has now. The op as a plain string: the log is read by every release, and an enum
        # would pickle as a reference to this release's module.
        command: dict[str, Any] = {"op": str(op), "v": version, "args": plain,
                                   "rid": rid, "ts": time.time()}
        if actor is not None:
            command["actor"] = actor
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._timeout
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NoLeader(f"no leader committed {op} within {self._timeout:g} s")
            future: Pending = loop.create_future()

            def done(result: Any, error: int, fut: Pending = future) -> None:
                loop.call_soon_threadsafe(_resolve, fut, result, error)

            self._node.apply_command(command, callback=done)
            try:
                async with asyncio.timeout(min(remaining, ATTEMPT_TIMEOUT)):
                    result, error = await future
            except TimeoutError:
                if not future.done() or future.cancelled():
                    log.info("write %s attempt %d timed out; retrying", op, attempt)
                    attempt += 1
                    continue
                result, error = future.result()  # it settled just as the time ran out
            if error == FAIL_REASON.SUCCESS:
                assert isinstance(result, Outcome)
                return result
            if error == FAIL_REASON.MISSING_LEADER and loop.time() - started >= NO_LEADER_WAIT:
                raise NoLeader(f"no leader is known to this node (waited {NO_LEADER_WAIT:g} s "
                               f"for {op})")
            attempt += 1
            pause = min(0.02 * 2**attempt, 0.25, max(deadline - loop.time(), 0))
            log.debug("write %s failed (reason %s); retry in %.2f s", op, error, pause)
            await asyncio.sleep(pause)


def _resolve(future: Pending, result: Any, error: int) -> None:
    if not future.done():
        future.set_result((result, error))
