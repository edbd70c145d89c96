"""Ctrl-C ends the run and keeps pytest's summary (a plugin; tests/conftest.py loads it).

1. pytest's own `tmp_path` fixture, at its teardown, reads the results that its report hook
   records for the test's phases (`node.stash[tmppath_result_key]`). Ctrl-C while a test is
   being set up (an in-process node electing itself, `ensure_admin`, a cluster starting: much
   of a node test's time) ends the phase before any report is made, so nothing is recorded.
   The interrupted test's fixtures are torn down at the session's end, where `tmp_path`
   raised `KeyError: <_pytest.stash.StashKey ...>` out of `pytest_sessionfinish`: a
   traceback instead of the "KeyboardInterrupt" and "== N passed in ... ==" summary. An
   empty record, set before any fixture, is what an unfinished test would have (with the
   default retention, "all", it is only read; with "failed" it keeps nothing, as for a pass).
2. Ctrl-C during an async test's API request was often lost: see `keep_interrupts`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, TypeVar

import pytest

try:
    from _pytest.tmpdir import tmppath_result_key
except ImportError:  # a pytest that keeps tmp_path's results elsewhere: nothing to guard
    tmppath_result_key = None

T = TypeVar("T")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if tmppath_result_key is not None:
        item.stash.setdefault(tmppath_result_key, {})


def keep_interrupts() -> None:
    """Ctrl-C during an async test or fixture always ends the run.

    asyncio.Runner (which pytest-asyncio and asyncio.run use) answers Ctrl-C by cancelling the
    coroutine it runs and raises KeyboardInterrupt only if that coroutine ends cancelled. One
    that swallows the cancellation returns normally, and the run went on as if no key had
    been pressed: Python 3.11's asyncio.wait_for does that when the future it waits for is
    already done as the cancellation arrives (fixed in 3.12), and mes/raft/writer.py waits
    for every Raft commit with it, so Ctrl-C during a test's API request was often lost.
    The runner counts the interrupts it received (`_interrupt_count`): a run that received
    one and returned raises KeyboardInterrupt after all.
    """
    run: Callable[..., Any] = asyncio.Runner.run
    if getattr(run, "keeps_interrupts", False):
        return

    @functools.wraps(run)
    def run_keeping_interrupts(self: asyncio.Runner, coro: Coroutine[Any, Any, T], *,
                               context: Context | None = None) -> T:
        result: T = run(self, coro, context=context)
        if getattr(self, "_interrupt_count", 0):
            raise KeyboardInterrupt
        return result

    run_keeping_interrupts.keeps_interrupts = True  # type: ignore[attr-defined]
    asyncio.Runner.run = run_keeping_interrupts  # type: ignore[method-assign]


keep_interrupts()
