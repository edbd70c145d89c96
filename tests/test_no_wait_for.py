"""No `asyncio.wait_for` in mes: on Python 3.11 it can swallow a cancellation that arrives
as the awaited future completes (CPython gh-86296), so Ctrl-C, a shutdown or a client's
disconnect could be lost. `async with asyncio.timeout(...)` has no such gap."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_for_calls(source: str) -> list[int]:
    """Lines calling `asyncio.wait_for` (as an attribute or imported by name)."""
    tree = ast.parse(source)
    names = {alias.asname or alias.name for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module == "asyncio"
             for alias in node.names if alias.name == "wait_for"}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "wait_for"
                and isinstance(func.value, ast.Name) and func.value.id == "asyncio") \
                or (isinstance(func, ast.Name) and func.id in names):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_both_forms() -> None:
    assert wait_for_calls("import asyncio\nasync def f(x):\n    await asyncio.wait_for(x, 1)\n") \
        == [3]
    assert wait_for_calls("from asyncio import wait_for as w\nasync def f(x):\n    await w(x, 1)\n"
                          ) == [3]
    assert wait_for_calls("async def f(c):\n    await c.wait_for(lambda: True)\n") == []


def test_mes_never_calls_asyncio_wait_for() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / "mes").rglob("*.py"))
             for line in wait_for_calls(path.read_text())]
    assert found == [], f"use `async with asyncio.timeout(...)` instead: {found}"
