"""Receiving a G-code upload: validate, store, copy to a majority, then commit its record.

The file is streamed in pieces into the blob store (hashed as it is written), so a large
upload is never whole in memory and never blocks the event loop for long.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mes.api.deps import commit, read
from mes.api.errors import ApiError
from mes.app import quotas
from mes.app.ports import Farm
from mes.auth.principal import Principal
from mes.files.peers import NotEnoughCopies
from mes.files.validate import BadUpload, check_head, check_name, check_size
from mes.state.ops import Op

# Size of the pieces an upload is copied in.
PIECE = 1 << 20


async def store_upload(node: Farm, upload: Any, by: Principal) -> dict[str, Any]:
    """Store one uploaded file and return its committed record under the name this upload
    gave; nothing is kept if refused."""
    if not hasattr(upload, "read"):  # an UploadFile, not a plain form field
        raise ApiError(422, "missing_file", "a multipart field 'file' is required", "file")
    max_bytes = node.settings.http.max_upload_mb * 2**20
    try:
        name = check_name(upload.filename or "")
        with node.blobs.incoming() as blob:
            while piece := await upload.read(PIECE):
                check_size(blob.size + len(piece), max_bytes)
                await asyncio.to_thread(blob.write, piece)
            check_size(blob.size, max_bytes)
            check_head(name, blob.head)
            sha = await asyncio.to_thread(blob.commit)
        size = blob.size
    except BadUpload as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.field) from None
    if not by.staff:
        quota = quotas.upload_quota(node.settings.quotas, sha, size)
        reached = await read(node, lambda c: quota(c, by.user_id))
        if reached is not None:
            raise ApiError(429, "quota_exceeded", reached, "file")
    try:
        await node.peers.replicate(sha, node.peer_urls(), node.cluster_size)
    except NotEnoughCopies as exc:
        raise ApiError(503, "not_enough_copies", str(exc), headers={"Retry-After": "2"}) from None
    value: dict[str, Any] = await commit(node, Op.FILE_REGISTER,
                                         {"id": sha, "name": name, "size": size}, None, by)
    # Identical content is stored once, under the first upload's name; this uploader's
    # answer (and a job made from it) keeps the name they gave.
    return {**value, "name": name}
