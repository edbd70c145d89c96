"""The repository holds what its code and README refer to."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_documents_referred_to_exist() -> None:
    texts = [p.read_text() for p in (ROOT / "mes").rglob("*.py")]
    texts.append((ROOT / "README.md").read_text())
    for text in texts:
        assert "DESIGN.md" not in text  # the design lives in docs/architecture.md
        for name in re.findall(r"(docs/[\w./-]+\.md)", text):
            assert (ROOT / name).is_file(), name
    assert (ROOT / "docs" / "architecture.md").is_file()
