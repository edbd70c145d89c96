"""A mes node that timestamps each write's steps: bench/write_budget.py's helper only.

It wraps, before the server starts, the command door (a write's start and end on the
event loop), the state machine's apply (on the Raft thread), the hand-back of the outcome
to the loop, and the hold read of a created job, and appends `step time` lines
(time.perf_counter, which is CLOCK_MONOTONIC and so comparable across processes on
Linux) to `$MES_TRACE_FILE`; each listener's mean time is written beside it at SIGUSR2.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mes.api.routes.print_jobs as print_jobs
import mes.app.commands as commands
import mes.raft.writer as writer
import mes.state.machine as machine

_OUT = open(os.environ["MES_TRACE_FILE"], "w", buffering=1 << 16)  # noqa: SIM115
_LOCK = threading.Lock()
_LISTENER_TIME: collections.defaultdict[str, float] = collections.defaultdict(float)
_LISTENER_CALLS: collections.Counter[str] = collections.Counter()


def step(name: str) -> None:
    at = time.perf_counter()
    with _LOCK:
        _OUT.write(f"{name} {at:.6f}\n")


def _install() -> None:
    submit = commands.CommandDoor.submit

    async def door(self: Any, *args: Any, **kwargs: Any) -> Any:
        step("door0")
        try:
            return await submit(self, *args, **kwargs)
        finally:
            step("door1")

    apply = machine.StateMachine.apply

    def traced_apply(self: Any, command: Mapping[str, Any], index: int = 0) -> Any:
        step("apply0")
        try:
            return apply(self, command, index)
        finally:
            step("apply1")

    resolve = writer._resolve

    def traced_resolve(*args: Any) -> None:
        step("resolved")
        resolve(*args)

    with_hold = print_jobs.with_hold  # type: ignore[attr-defined]

    async def traced_hold(*args: Any, **kwargs: Any) -> Any:
        step("hold0")
        try:
            return await with_hold(*args, **kwargs)
        finally:
            step("hold1")

    add_listener = machine.StateMachine.add_listener

    def timed_listener(self: Any, listener: Callable[..., None]) -> None:
        name = getattr(listener, "__qualname__", repr(listener))

        def timed(command: Mapping[str, Any], outcome: Any) -> None:
            began = time.perf_counter()
            try:
                listener(command, outcome)
            finally:
                _LISTENER_TIME[name] += time.perf_counter() - began
                _LISTENER_CALLS[name] += 1

        add_listener(self, timed)

    commands.CommandDoor.submit = door  # type: ignore[method-assign]
    machine.StateMachine.apply = traced_apply  # type: ignore[method-assign]
    machine.StateMachine.add_listener = timed_listener  # type: ignore[method-assign]
    writer._resolve = traced_resolve  # type: ignore[assignment]
    print_jobs.with_hold = traced_hold  # type: ignore[attr-defined]


def _dump(*_: Any) -> None:
    with _LOCK:
        _OUT.flush()
    with open(os.environ["MES_TRACE_FILE"] + ".listeners", "w") as out:
        for name, spent in sorted(_LISTENER_TIME.items(), key=lambda item: -item[1]):
            out.write(f"{name}\t{spent / _LISTENER_CALLS[name] * 1e6:.0f}\n")


if __name__ == "__main__":
    _install()
    signal.signal(signal.SIGUSR2, _dump)
    from mes.cli import server

    server()
