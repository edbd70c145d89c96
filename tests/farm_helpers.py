"""Helpers for tests that run printer workers in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

GCODE = b"; a tiny print\nG28\nG1 X10 Y10 Z0.2 F3000\nG1 X20 E1\nM84\n"


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float,
                     what: str, interval: float = 0.05) -> T:
    """Poll an async condition until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


async def upload(api: httpx.AsyncClient, name: str = "part.gcode",
                 content: bytes = GCODE) -> dict[str, Any]:
    response = await api.post("/api/v1/files", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data
