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

    def __init__(self, store: BlobStore, timeout: float = 30.0) -> None:
        self._store = store
        self._timeout = timeout

    async def replicate(self, sha: str, data: bytes, peer_urls: list[str],
                        cluster_size: int) -> int:
        """Copy to peers until a majority (this node included) holds the blob; return copies."""
        needed = cluster_size // 2 + 1
        if needed <= 1:
            return 1
        copies = 1
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            pushes = [asyncio.create_task(self._push(client, url, sha, data))
                      for url in peer_urls]
            try:
                for finished in asyncio.as_completed(pushes):
                    if await finished:
                        copies += 1
                        if copies >= needed:
                            break
            finally:
                # the remaining peers keep receiving in the background of this request
                await asyncio.gather(*pushes, return_exceptions=True)
        if copies < needed:
            raise NotEnoughCopies(f"{copies} of {cluster_size} nodes hold the file; "
                                  f"{needed} are needed")
        return copies

    async def _push(self, client: httpx.AsyncClient, url: str, sha: str, data: bytes) -> bool:
        try:
            response = await client.put(f"{url.rstrip('/')}{BLOB_PATH}{sha}", content=data)
        except httpx.HTTPError as exc:
            log.info("copying blob %s to %s failed: %s", sha[:12], url, exc)
            return False
        return response.status_code in (200, 201, 204)

    async def fetch(self, sha: str, peer_urls: list[str]) -> bytes | None:
        """Get a blob this node lacks from the first peer that has it, and keep it."""
        if self._store.has(sha):
            return self._store.read(sha)
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            for url in peer_urls:
                try:
                    response = await client.get(f"{url.rstrip('/')}{BLOB_PATH}{sha}")
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
