"""Waiting for a condition with a deadline: the only synchronisation tests use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout: float = 10.0,
             what: str = "a condition", interval: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds.

    Connection errors count as "not yet" (a server that is still starting).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                 f"(last error: {last_error!r})")
        time.sleep(interval)
