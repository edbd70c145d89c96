"""The repository holds what its code and documents refer to."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The documents a reader follows links through: the README, docs/, bench/ and the changelog.
MARKDOWN = sorted({ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md",
                   *(ROOT / "docs").glob("*.md")})
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """`text` without fenced code blocks and code spans (their brackets are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_documents_referred_to_exist() -> None:
    texts = [p.read_text() for p in (ROOT / "mes").rglob("*.py")]
    texts.extend(p.read_text() for p in MARKDOWN)
    for text in texts:
        assert "DESIGN.md" not in text  # the design lives in docs/architecture.md
        for name in re.findall(r"(docs/[\w./-]+\.md)", text):
            assert (ROOT / name).is_file(), name
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert (ROOT / "bench" / "README.md").is_file()


def test_relative_links_between_documents_resolve() -> None:
    """Every relative link of the documents names a file that exists, and every `#anchor`
    (in the same file or a markdown file linked to) a heading of that file."""
    broken = []
    for path in MARKDOWN:
        for target in LINK.findall(prose(path.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            name, _, fragment = target.partition("#")
            linked = (path.parent / name).resolve() if name else path
            where = f"{path.relative_to(ROOT)}: ({target})"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{where}: no heading #{fragment} in {linked.name}")
    assert broken == [], "\n".join(broken)


def test_the_anchor_rule() -> None:
    """The check itself: anchors as GitHub makes them."""
    assert anchor("HTTPS and reverse proxies") == "https-and-reverse-proxies"
    assert anchor("Raft (mes/raft/)") == "raft-mesraft"
    assert anchor("One command's path") == "one-commands-path"
    assert anchor("The Raft port and CLUSTER_SECRET") == "the-raft-port-and-cluster_secret"
    assert anchor("Printer emulator (`mock-printer`)") == "printer-emulator-mock-printer"
    assert anchor("Adding and removing a node (a hub)") == "adding-and-removing-a-node-a-hub"
    assert anchor("0.4.0 — 2026-12-06") == "040--2026-12-06"
    assert LINK.findall(prose("see [a](docs/api.md#x), `[b](nowhere.md)`")) == ["docs/api.md#x"]
