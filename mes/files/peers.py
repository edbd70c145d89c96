"""Copies of blobs between nodes: a majority holds a file before anything references it."""

from __future__ import annotations

import asyncio
import logging

import httpx

from mes.files.store import BlobStore

log = logging.getLogger(__name__)

BLOB_PATH = "/api/v1/internal/blobs/"


class NotEnoughCopies(Exception):
    """Fewer than a majority of nodes confirmed the blob in time."""


class BlobPeers:
    """Pushes blobs to and fetches them from the other nodes' HTTP APIs."""

    def __init__(self, store: BlobStore, own_url: str, timeout: float = 30.0) -> None:
        self._store = store
        self._own_url = own_url.rstrip("/")
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[bool]] = set()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    def _others(self, peer_urls: list[str]) -> list[str]:
        return sorted({u.rstrip("/") for u in peer_urls} - {self._own_url})

    async def replicate(self, sha: str, data: bytes, peer_urls: list[str],
                        cluster_size: int) -> int:
        """Copy to peers until a majority (this node included) holds the blob; return copies.

        Copies to the remaining peers go on in the background.
        """
        needed = cluster_size // 2 + 1
        if needed <= 1:
            return 1
        copies = 1
        pushes = [asyncio.create_task(self._push(url, sha, data))
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

    async def _push(self, url: str, sha: str, data: bytes) -> bool:
        try:
            response = await self._http().put(f"{url}{BLOB_PATH}{sha}", content=data)
        except httpx.HTTPError as exc:
            log.info("copying blob %s to %s failed: %s", sha[:12], url, exc)
            return False
        return response.status_code in (200, 201, 204)

    async def fetch(self, sha: str, peer_urls: list[str]) -> bytes | None:
        """Get a blob this node lacks from the first peer that has it, and keep it."""
        if self._store.has(sha):
            return self._store.read(sha)
        for url in self._others(peer_urls):
            try:
                response = await self._http().get(f"{url}{BLOB_PATH}{sha}")
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                try:
                    self._store.put(response.content, expected_sha=sha)
                except ValueError:
                    log.warning("peer %s sent a corrupt copy of %s", url, sha[:12])
                    continue
                return response.content
        return None

    async def aclose(self) -> None:
        """Finish background copies and close connections."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
