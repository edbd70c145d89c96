"""SQL lives in `mes/state` only: no module of `mes` outside it builds a query or names a
table; they call the named queries of `mes.state` (docs/architecture.md).

Importing `sqlalchemy.Connection` (or any other name not listed in QUERY_BUILDERS) for type
hints is fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MES = ROOT / "mes"
STATE = MES / "state"
TABLES = "mes.state.tables"
# Names of sqlalchemy (or any of its submodules) that build SQL.
QUERY_BUILDERS = frozenset({"select", "func", "or_", "and_", "insert", "update", "delete",
                            "exists", "text", "Table"})
# Modules outside mes/state allowed to break the rule (path under the repository -> why).
# Keep it empty: a module that needs SQL gets a named query in mes/state instead.
ALLOWED: dict[str, str] = {}


def _is_sqlalchemy(module: str) -> bool:
    return module == "sqlalchemy" or module.startswith("sqlalchemy.")


def _is_tables(module: str) -> bool:
    return module == TABLES or module.startswith(TABLES + ".")


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module an ImportFrom names, relative ones resolved from `package`."""
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = parts[:len(parts) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def violations(source: str, package: str = "mes") -> list[tuple[int, str]]:
    """(line, what) for every import of `source` (a module of `package`) that builds SQL or
    names a table."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_tables(alias.name):
                    found.append((node.lineno, f"imports {alias.name}"))
                elif _is_sqlalchemy(alias.name):
                    # `import sqlalchemy` reaches every builder as an attribute.
                    found.append((node.lineno, f"imports the module {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            for alias in node.names:
                if _is_tables(module) or _is_tables(f"{module}.{alias.name}"):
                    found.append((node.lineno, f"imports {TABLES} ({alias.name})"))
                elif _is_sqlalchemy(module) and alias.name in QUERY_BUILDERS | {"*"}:
                    found.append((node.lineno, f"imports {alias.name} from {module}"))
    return found


def test_the_check_finds_every_form() -> None:
    """The check itself: each way of reaching a table or a builder is caught."""
    caught = [
        "from mes.state.tables import users",
        "from mes.state import tables",
        "import mes.state.tables",
        "import mes.state.tables as t",
        "from ..state.tables import users",
        "from ..state import tables",
        "from .tables import users",
        "from sqlalchemy import Connection, select",
        "from sqlalchemy.sql import func",
        "from sqlalchemy.sql.expression import or_ as either",
        "from sqlalchemy import text",
        "from sqlalchemy import *",
        "import sqlalchemy",
        "import sqlalchemy.sql as sql",
    ]
    for line in caught:
        package = "mes.state" if line.startswith("from .tables") else "mes.api"
        assert violations(line, package), line
    fine = ["from sqlalchemy import Connection", "from sqlalchemy.engine import Connection",
            "from mes.state import queries", "from mes.state.queries import owner_of",
            "from mes.state.tablesmith import x", "from .tables import x",
            "from ..state import queries"]
    for line in fine:
        assert not violations(line, "mes.api"), line


def test_only_mes_state_builds_sql() -> None:
    problems = []
    checked = 0
    for path in sorted(MES.rglob("*.py")):
        if path.is_relative_to(STATE):
            continue
        checked += 1
        name = path.relative_to(ROOT).as_posix()
        if name in ALLOWED:
            continue
        package = ".".join(path.relative_to(ROOT).parent.parts)
        for line, what in violations(path.read_text(encoding="utf-8"), package):
            problems.append(f"{name}:{line}: {what}")
    assert checked > 50, "the scan found too few modules: is MES right?"
    assert not problems, ("SQL outside mes/state (make it a named query in mes/state and "
                          "call that):\n" + "\n".join(problems))


def test_every_exception_is_still_needed() -> None:
    """An exception whose module no longer breaks the rule (or is gone) is removed."""
    for name, reason in ALLOWED.items():
        assert reason.strip(), f"{name}: give the reason it may build SQL"
        path = ROOT / name
        package = ".".join(Path(name).parent.parts)
        assert path.is_file() and violations(path.read_text(encoding="utf-8"), package), (
            f"{name} no longer builds SQL: remove it from ALLOWED")
