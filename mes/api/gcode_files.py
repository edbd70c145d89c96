"""Slicer metadata of stored files, read once per file on this node (files never change:
their id is their SHA-256)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from mes.api.deps import NodeDep
from mes.files.gcode_meta import GcodeMeta, Thumbnail, read_metadata

# Files whose metadata this node keeps (a few KiB each, thumbnails' text included).
CACHED_FILES = 256
# A given weight this far from the file's own figure is accepted with a warning.
WEIGHT_TOLERANCE = 0.10


# By file id, the most recently used last; only the event loop touches it.
_known: OrderedDict[str, GcodeMeta] = OrderedDict()


async def file_metadata(node: NodeDep, file_id: str) -> GcodeMeta | None:
    """The file's metadata, or None when no reachable node holds the file. A file read
    before answers at once: a job's creation (a hot path) makes no trip to a thread."""
    meta = _known.get(file_id)
    if meta is not None:
        _known.move_to_end(file_id)
        return meta
    if not await node.hold_blob(file_id):
        return None
    meta = await asyncio.to_thread(read_metadata, node.blobs.path(file_id))
    _known[file_id] = meta
    while len(_known) > CACHED_FILES:
        _known.popitem(last=False)
    return meta


def weight_warning(given: int, meta: GcodeMeta | None) -> str | None:
    """A warning when `given` grams differ from the file's own figure by more than 10 %."""
    stated = meta.filament_grams if meta is not None else None
    if stated is None or stated <= 0:
        return None
    if abs(given - stated) <= WEIGHT_TOLERANCE * stated:
        return None
    return (f"print_weight_in_grams {given} differs from the {stated:g} g the file's slicer "
            f"wrote by more than {WEIGHT_TOLERANCE:.0%}; the job was queued with {given} g")


def chosen_thumbnail(meta: GcodeMeta, width: int | None, height: int | None
                     ) -> Thumbnail | None:
    """The largest thumbnail, or with a size asked for the smallest one at least that large
    (else the largest). PNG before other formats of the same size."""
    pictures = sorted(meta.thumbnails, key=lambda t: (t.width * t.height, t.format != "PNG"))
    if not pictures:
        return None
    if width is None and height is None:
        best = max(t.width * t.height for t in pictures)
        return next(t for t in pictures if t.width * t.height == best)
    for picture in pictures:
        if picture.width >= (width or 0) and picture.height >= (height or 0):
            return picture
    return pictures[-1]


def metadata_view(file_id: str, meta: GcodeMeta) -> dict[str, Any]:
    """What GET /files/{id}/metadata answers."""
    return {"id": file_id, **meta.as_dict(), "weight_grams": meta.weight_grams}


# Estimated printing seconds by file id (None: the file states none); a few bytes each.
_durations: dict[str, int | None] = {}
MAX_DURATIONS = 20_000


def _read_durations(node: NodeDep, file_ids: list[str]) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for file_id in file_ids:
        try:
            found[file_id] = read_metadata(node.blobs.path(file_id)).estimated_seconds
        except OSError:  # removed meanwhile: not known this time
            continue
    return found


async def estimated_seconds(node: NodeDep, file_ids: set[str]) -> dict[str, int | None]:
    """Each file's estimated printing time where this node knows it: from metadata read
    before, or read now from a file this node holds (files on other nodes are not fetched
    for an estimate)."""
    known: dict[str, int | None] = {}
    unread = []
    for file_id in file_ids:
        if file_id in _durations:
            known[file_id] = _durations[file_id]
        elif (meta := _known.get(file_id)) is not None:
            known[file_id] = meta.estimated_seconds
        elif node.blobs.has(file_id):
            unread.append(file_id)
    if unread:
        known.update(await asyncio.to_thread(_read_durations, node, unread))
    if len(_durations) + len(known) > MAX_DURATIONS:
        _durations.clear()
    _durations.update(known)
    return known
