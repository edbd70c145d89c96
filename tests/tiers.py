"""Test tiers, applied at collection from what each test uses (its own source, the module's
helpers it calls and the fixtures it asks for), so a new test lands in its tier unmarked:

- `unit`: no node at all (pure functions, an in-memory state machine);
- `node`: an in-process node (Raft on loopback, SQLite, the REST app in memory);
- `process`: other processes (server nodes, OctoPrint, Moonraker, node-opcua, Chromium,
  the console scripts) or iptables;
- `cluster`: several server processes (also marked by hand, as before);
- `slow`: listed in tests/slow.txt (made by tests/slow_list.py from a timed run): tests
  of the other tiers that take 1.5 s or more.

The everyday tier is `pytest -m "not process and not cluster and not slow"`.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TIERS = ("unit", "node", "process", "cluster", "slow")
_PROCESS = re.compile(
    r"\bServerProcess\b|\bCluster\(|\bsubprocess\b|\bPopen\b|\bstart_emulator\b"
    r"|\boctoprint\b|node_opcua|\bmoonraker\b|\bklipper\b|\bchromium\b|playwright"
    r"|\bpartition\b|\biptables\b|\brelease\.|\brun_script\b|\bspawn\b")
_NODE = re.compile(r"\bFarmNode\(|\brunning_farm\b|\bopcua_farm\b|\bsecured_server\b"
                   r"|\bRaftNode\(|\bSyncObj\(")
# Fixtures of conftest.py that start an in-process node.
_NODE_FIXTURES = frozenset({"node", "api"})


def _source(obj: Any) -> str:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return ""


def _called_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _reachable_source(start: Iterable[Any], module: ModuleType | None) -> str:
    """The source of `start` and of every function or class of `module` it names, through
    any depth (each once)."""
    seen: set[int] = set()
    parts: list[str] = []
    todo = list(start)
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        text = _source(obj)
        parts.append(text)
        if module is None:
            continue
        for name in _called_names(text):
            target = getattr(module, name, None)
            if (inspect.isfunction(target) or inspect.isclass(target)) \
                    and getattr(target, "__module__", None) == module.__name__:
                todo.append(target)
    return "\n".join(parts)


def _fixture_functions(item: pytest.Item) -> list[Any]:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    found = []
    for definitions in info.name2fixturedefs.values():
        for definition in definitions:
            found.append(definition.func)
    return found


def tier_of(item: pytest.Item) -> str:
    """The tier of one collected test."""
    if item.get_closest_marker("cluster") is not None:
        return "cluster"
    function = getattr(item, "function", None)
    module = getattr(item, "module", None)
    names = set(getattr(item, "fixturenames", ()))
    source = _reachable_source([function, *_fixture_functions(item)], module)
    if _PROCESS.search(source) or names & {"octoprint", "start_emulator", "partition"}:
        return "process"
    if _NODE.search(source) or names & _NODE_FIXTURES:
        return "node"
    return "unit"


SLOW_LIST = Path(__file__).with_name("slow.txt")


def slow_tests(listing: Path = SLOW_LIST) -> frozenset[str]:
    """The node ids listed in tests/slow.txt."""
    if not listing.exists():
        return frozenset()
    ids = (line.split("#", 1)[0].strip() for line in listing.read_text().splitlines())
    return frozenset(nodeid for nodeid in ids if nodeid)


def mark_tiers(items: list[pytest.Item]) -> None:
    """Give every test its tier's marker, and `slow` to those tests/slow.txt lists."""
    slow = slow_tests()
    for item in items:
        item.add_marker(getattr(pytest.mark, tier_of(item)))
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)
