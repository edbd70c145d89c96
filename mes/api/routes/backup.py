"""`GET /api/v1/cluster/backup`: a consistent backup of the running farm (admins).

The state machine's image is taken between two applies (the node keeps printing), and the
tar with the G-code files it names is written to an unnamed temporary file in DATA_DIR,
then streamed; `restore` seeds a new node from it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from typing import IO

from fastapi.responses import StreamingResponse

from mes.api.auth import Admin, authenticated_router
from mes.api.deps import NodeDep
from mes.backup import write_backup

router = authenticated_router("/cluster/backup", "cluster")
CHUNK = 1 << 20


@router.get("", response_class=StreamingResponse, responses={
    200: {"content": {"application/x-tar": {}},
          "description": "a tar: backup.json, state.sqlite and blobs/<sha256>"}})
async def backup(node: NodeDep, _: Admin) -> StreamingResponse:
    """A tar of the farm's state (as applied on this node) and the G-code files it names."""
    index, image = await asyncio.to_thread(node.state_image)
    spool = tempfile.TemporaryFile(dir=node.settings.data_dir)  # noqa: SIM115 (closed by _chunks)
    try:
        info = await asyncio.to_thread(write_backup, spool, index, image, node.blobs)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(info["created_at"]))
    return StreamingResponse(
        _chunks(spool), media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="mes-backup-{stamp}.tar"',
                 "X-Backup-Raft-Index": str(index),
                 "X-Backup-Missing-Files": str(len(info["missing_files"]))})


async def _chunks(spool: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(spool.read, CHUNK):
            yield chunk
    finally:
        spool.close()
