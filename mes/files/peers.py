"""Copies of blobs between nodes: a majority holds a file before anything references it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from mes.files.store import BlobStore

log = logging.getLogger(__name__)

BLOB_PATH = "/api/v1/internal/blobs/"


# Size of the pieces a blob is sent and received in.
PIECE = 1 << 20


async def _pieces(path: Path) -> AsyncIterator[bytes]:
    """A file's content in pieces, read off the event loop."""
    with path.open("rb") as source:
        while piece := await asyncio.to_thread(source.read, PIECE):
            yield piece


def _warn_if_refused(response: httpx.Response, url: str) -> None:
    if response.status_code == 401:
        log.warning("peer %s refused this node's blob token: is its CLUSTER_SECRET the same?",
                    url)


class NotEnoughCopies(Exception):
    """Fewer than a majority of nodes confirmed the blob in time."""


class BlobPeers:
    """Pushes blobs to and fetches them from the other nodes' HTTP APIs."""

    def __init__(self, store: BlobStore, own_url: str, timeout: float = 30.0,
                 token: str | None = None) -> None:
        self._store = store
        # The cluster's blob token (mes.cluster_secret), sent on every push and fetch.
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_url = own_url.rstrip("/")
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[bool]] = set()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
        return self._client

    def _others(self, peer_urls: list[str]) -> list[str]:
        return sorted({u.rstrip("/") for u in peer_urls} - {self._own_url})

    async def replicate(self, sha: str, peer_urls: list[str], cluster_size: int) -> int:
        """Copy to peers until a majority (this node included) holds the blob; return copies.

        Copies to the remaining peers go on in the background.
        """
        needed = cluster_size // 2 + 1
        if needed <= 1:
            return 1
        copies = 1
        pushes = [asyncio.create_task(self._push(url, sha))
                  for url in self._others(peer_urls)]
        for task in pushes:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for finished in asyncio.as_completed(pushes):
            if await finished:
                copies += 1
                if copies >= needed:
                    return copies
        raise NotEnoughCopies(f"{copies} of {cluster_size} nodes hold the file; "
                              f"{needed} are needed")

    async def _push(self, url: str, sha: str) -> bool:
        path = self._store.path(sha)
        try:
            size = path.stat().st_size
            response = await self._http().put(
                f"{url}{BLOB_PATH}{sha}", content=_pieces(path),
                headers={"Content-Length": str(size)})
        except (httpx.HTTPError, OSError) as exc:
            log.info("copying blob %s to %s failed: %s", sha[:12], url, exc)
            return False
        _warn_if_refused(response, url)
        return response.status_code in (200, 201, 204)

    async def fetch(self, sha: str, peer_urls: list[str]) -> bool:
        """Make sure this node holds a blob, streaming it from the first peer that has it;
        False when none has."""
        if self._store.has(sha):
            return True
        for url in self._others(peer_urls):
            try:
                if await self._download(url, sha):
                    return True
            except httpx.HTTPError:
                continue
            except ValueError:
                log.warning("peer %s sent a corrupt copy of %s", url, sha[:12])
        return False

    async def _download(self, url: str, sha: str) -> bool:
        async with self._http().stream("GET", f"{url}{BLOB_PATH}{sha}") as response:
            if response.status_code != 200:
                _warn_if_refused(response, url)
                return False
            with self._store.incoming(expected_sha=sha) as blob:
                async for piece in response.aiter_bytes(PIECE):
                    await asyncio.to_thread(blob.write, piece)
                await asyncio.to_thread(blob.commit)
        return True

    async def aclose(self) -> None:
        """Finish background copies and close connections."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
