"""The page's files, read once: compressed, and named by their content so that a browser
keeps them until they change.

The page links each file with `?v=<hash of its content>`; such a request is answered
`immutable` for a year, any other (an old or missing hash) with `no-cache`. Text files are
gzipped once at start and sent so to every client that accepts gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Response

IMMUTABLE = "public, max-age=31536000, immutable"
_TEXT = (".js", ".css", ".html", ".svg", ".json", ".md")
_LINKED = re.compile(r'(?P<attr>(?:src|href))="(?P<path>/static/[^"?#]+)"')


@dataclass(frozen=True)
class Asset:
    """One file: its bytes, gzipped bytes (text only), type and content hash."""

    body: bytes
    gzipped: bytes | None
    media_type: str
    version: str


class Assets:
    """Every file under `root`, served from memory."""

    def __init__(self, root: Path) -> None:
        self._files: dict[str, Asset] = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            body = path.read_bytes()
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if media.startswith("text/") or media in ("application/javascript", "text/javascript"):
                media += "; charset=utf-8"
            packed = gzip.compress(body, 9, mtime=0) if path.suffix in _TEXT else None
            if packed is not None and len(packed) >= len(body):
                packed = None
            self._files[path.relative_to(root).as_posix()] = Asset(
                body, packed, media, hashlib.sha256(body).hexdigest()[:16])

    def versioned(self, html: str) -> str:
        """`html` with every /static/ link it makes carrying its file's content hash."""
        def link(match: re.Match[str]) -> str:
            asset = self._files.get(match["path"].removeprefix("/static/"))
            if asset is None:
                return match[0]
            return f'{match["attr"]}="{match["path"]}?v={asset.version}"'
        return _LINKED.sub(link, html)

    def response(self, name: str, request: Request) -> Response:
        """The file `name` (relative to the root), compressed when the client accepts it."""
        asset = self._files.get(name)
        if asset is None:
            return Response(status_code=404)
        cache = IMMUTABLE if request.query_params.get("v") == asset.version else "no-cache"
        headers = {"Cache-Control": cache, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        accepts = request.headers.get("accept-encoding", "")
        if asset.gzipped is not None and "gzip" in accepts.lower():
            headers["Content-Encoding"] = "gzip"
            return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
