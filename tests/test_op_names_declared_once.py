"""Each command is declared once (issue 19 §2): code and tests name a command through the
registry (`mes.state.ops.Op`), never by a string literal spelled like its op.

A literal is allowed where the spelling itself is the point: in the registry, in the files
of ALLOWED below, and on a line whose comment starts with `# wire format` (one deliberate
literal marked in place, e.g. a command written as it is on the wire or in the log)."""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator
from pathlib import Path

from mes.state.ops import Op

ROOT = Path(__file__).resolve().parents[1]

# Where literals spelled like an op are the point, with why. Keep it short: prefer Op, or a
# `# wire format` comment on the one line.
ALLOWED: tuple[tuple[str, str], ...] = (
    ("mes/state/notifications.py",
     "notification types ('job.started', 'printer.attention') share an op's spelling"),
)

REGISTRY = ("mes/state/ops.py", "mes/state/commands.py")
MARK = "# wire format"
OP_NAMES = frozenset(op.value for op in Op)


def _sources() -> Iterator[Path]:
    yield from sorted((ROOT / "mes").rglob("*.py"))
    corpus = ROOT / "tests" / "corpus"
    yield from sorted(p for p in (ROOT / "tests").rglob("*.py") if corpus not in p.parents)
    yield from sorted((ROOT / "bench").glob("*.py"))


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the constants that are a module's, class's or function's docstring."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                found.add(id(first.value))
    return found


def _marked_lines(source: str) -> set[int]:
    """Lines whose comment starts with the wire format mark."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0] for t in tokens
            if t.type == tokenize.COMMENT and t.string.startswith(MARK)}


def _literals(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, op name, marked) of every string constant spelled like an op."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    docstrings = _docstrings(tree)
    marked = _marked_lines(source)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value in OP_NAMES and id(node) not in docstrings):
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            yield node.lineno, node.value, any(line in marked for line in lines)


def test_no_op_name_is_a_string_literal_outside_the_registry() -> None:
    skipped = {*REGISTRY, *(path for path, _ in ALLOWED)}
    stray = []
    for path in _sources():
        name = path.relative_to(ROOT).as_posix()
        if name in skipped:
            continue
        stray += [f"{name}:{line}: {value!r} (use Op.{Op(value).name})"
                  for line, value, marked in sorted(_literals(path)) if not marked]
    assert not stray, ("op names written as string literals; name them through "
                       "mes.state.ops.Op, or end the line with `# wire format` where the "
                       "spelling is the point:\n" + "\n".join(stray))


def test_the_allow_list_is_short_and_current() -> None:
    assert len(ALLOWED) <= 5, "keep ALLOWED short: mark single lines with `# wire format`"
    for name, reason in ALLOWED:
        assert reason.strip(), f"{name}: say why its literals are the point"
        path = ROOT / name
        assert path.is_file(), f"{name} is gone: remove it from ALLOWED"
        assert any(True for _ in _literals(path)), \
            f"{name} names no op by a literal any more: remove it from ALLOWED"


def test_the_scan_sees_literals_and_skips_docstrings_and_marked_lines(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        f'"""{Op.JOB_CREATE.value} in a docstring."""\n'
        f"def f():\n"
        f'    """{Op.NOOP.value}"""\n'
        f'    return "{Op.JOB_CREATE.value}", "job.created"\n'
        f'WIRE = {{"op": "{Op.NOOP.value}"}}  {MARK}: as logged\n',
        encoding="utf-8")
    assert sorted(_literals(sample)) == [(4, Op.JOB_CREATE.value, False),
                                         (5, Op.NOOP.value, True)]
