"""Receiving a G-code upload: validate, store, copy to a majority, then commit its record."""

from __future__ import annotations

from typing import Any

from mes.api.deps import commit
from mes.api.errors import ApiError
from mes.files.peers import NotEnoughCopies
from mes.files.validate import BadUpload, check_content, check_name
from mes.node import FarmNode


async def store_upload(node: FarmNode, upload: Any) -> dict[str, Any]:
    """Store one uploaded file and return its committed record; nothing is kept if refused."""
    if not hasattr(upload, "read"):  # an UploadFile, not a plain form field
        raise ApiError(422, "missing_file", "a multipart field 'file' is required", "file")
    max_bytes = node.settings.max_upload_mb * 2**20
    try:
        name = check_name(upload.filename or "")
        data = await upload.read(max_bytes + 1)
        check_content(name, data, max_bytes)
    except BadUpload as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.field) from None
    sha = node.blobs.put(data)
    try:
        await node.peers.replicate(sha, data, node.peer_urls(), node.cluster_size)
    except NotEnoughCopies as exc:
        raise ApiError(503, "not_enough_copies", str(exc), headers={"Retry-After": "2"}) from None
    value: dict[str, Any] = await commit(node, "file.register",
                                         {"id": sha, "name": name, "size": len(data)}, None)
    return value
