"""Camera snapshots through the node: the page never reaches a printer's network itself.

A printer's `camera_url` is fetched by the node under the printers' network rules
(PRINTER_NETWORKS, ALLOW_LOCAL_ADDRESSES, checked on every connection), within a deadline
and a size limit. A JPEG or PNG answer is the snapshot; from an MJPEG stream
(multipart/x-mixed-replace, what most webcam servers stream) the first frame is taken.
One fetch per printer at a time, and a snapshot younger than FRESH_SECONDS is answered
from memory, so that many open pages cost the camera one request every few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp

from mes.networks import AddressRefused, Targets
from mes.printers.http import printer_session

MAX_BYTES = 5 * 2**20
FRESH_SECONDS = 2.0
TIMEOUT = aiohttp.ClientTimeout(total=8.0, connect=4.0)
# Printers whose last snapshot is kept (the oldest used is forgotten first).
KEPT = 256
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_IMAGES = ("image/jpeg", "image/png")


class CameraError(Exception):
    """The camera did not give a picture; the message says why, in words."""


@dataclass(frozen=True)
class Snapshot:
    """One picture and its type."""

    body: bytes
    media_type: str
    taken_at: float


class Cameras:
    """The node's camera fetcher (one aiohttp session, made on first use)."""

    def __init__(self, targets: Targets) -> None:
        self._targets = targets
        self._session: aiohttp.ClientSession | None = None
        self._kept: OrderedDict[str, Snapshot] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def snapshot(self, printer_id: str, url: str) -> Snapshot:
        """The printer's picture now (or from the last FRESH_SECONDS)."""
        lock = self._locks.setdefault(printer_id, asyncio.Lock())
        async with lock:
            kept = self._kept.get(printer_id)
            if kept is not None and time.monotonic() - kept.taken_at < FRESH_SECONDS:
                return kept
            shot = await self._fetch(url)
            self._kept[printer_id] = shot
            self._kept.move_to_end(printer_id)
            while len(self._kept) > KEPT:
                forgotten, _ = self._kept.popitem(last=False)
                self._locks.pop(forgotten, None)
            return shot

    async def _fetch(self, url: str) -> Snapshot:
        if self._session is None or self._session.closed:
            self._session = printer_session(self._targets, timeout=TIMEOUT)
        try:
            async with self._session.get(url, allow_redirects=False) as answer:
                if answer.status != 200:
                    raise CameraError(f"the camera answered HTTP {answer.status}")
                media = (answer.content_type or "").lower()
                if media in _IMAGES:
                    return Snapshot(await _read_at_most(answer.content, MAX_BYTES), media,
                                    time.monotonic())
                if media.startswith("multipart/"):
                    return Snapshot(await _first_frame(answer.content), "image/jpeg",
                                    time.monotonic())
                raise CameraError(f"the camera's address gives {media or 'no type'}, not a "
                                  "picture: give the address of its snapshot (JPEG or PNG) "
                                  "or of its MJPEG stream")
        except AddressRefused as exc:
            raise CameraError(f"the camera's address is not one printers may be at: {exc}"
                              ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise CameraError(f"the camera did not answer ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    body = bytearray()
    async for piece in stream.iter_chunked(65536):
        body += piece
        if len(body) > limit:
            raise CameraError(f"the camera's picture is larger than {limit // 2**20} MiB")
    if not body:
        raise CameraError("the camera sent an empty picture")
    return bytes(body)


async def _first_frame(stream: aiohttp.StreamReader) -> bytes:
    """The first JPEG in an MJPEG stream (between its start and end markers)."""
    seen = bytearray()
    async for piece in stream.iter_chunked(65536):
        seen += piece
        start = seen.find(_JPEG_START)
        if start >= 0:
            end = seen.find(_JPEG_END, start + 2)
            if end >= 0:
                return bytes(seen[start:end + 2])
        if len(seen) > MAX_BYTES:
            break
    raise CameraError("the camera's stream held no complete JPEG picture within "
                      f"{MAX_BYTES // 2**20} MiB")
