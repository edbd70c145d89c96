"""`/api/v1/files`: G-code uploads and downloads; `/api/v1/internal/blobs` between nodes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse

from mes.api.auth import Caller, authenticated_router
from mes.api.deps import NodeDep, found, read
from mes.api.errors import ApiError
from mes.api.gcode_files import chosen_thumbnail, file_metadata, metadata_view
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, paged
from mes.api.schemas import FileOut
from mes.api.uploads import store_upload
from mes.cluster_secret import bearer_matches
from mes.files.store import SHA256_PATTERN
from mes.state import listing, queries
from mes.state.stored_files import may_use_file, name_for


async def cluster_node(request: Request, node: NodeDep) -> None:
    """Let through only callers that carry this cluster's blob token (other nodes)."""
    if not bearer_matches(request.headers.get("authorization"), node.settings.cluster_secret):
        raise ApiError(401, "unauthorized", "only nodes of this cluster may copy blobs",
                       headers={"WWW-Authenticate": "Bearer"})


router = authenticated_router("/files", "files")
# Between nodes only: every request must carry the token derived from CLUSTER_SECRET.
internal = APIRouter(prefix="/internal/blobs", include_in_schema=False,
                     dependencies=[Depends(cluster_node)])


@router.post("", status_code=201, response_model=FileOut)
async def upload_file(file: UploadFile, node: NodeDep, who: Caller) -> Any:
    """Store a .gcode or .bgcode file; answers its SHA-256 id, name and size."""
    return await store_upload(node, file, who)


@router.get("", response_model=list[FileOut])
async def list_files(request: Request, response: Response, node: NodeDep, who: Caller,
                     limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """Stored files, newest first, one page at a time (the next page: `Link` rel=next).
    Users see the files they uploaded, each under the name they gave it and with the time
    of their latest upload of it; operators and admins see every file under its stored
    (first) name."""
    after = decode_cursor(cursor, float, str)
    if who.staff:
        rows = await read(node, lambda c: listing.files_page(c, after, limit + 1))
    else:
        rows = await read(node, lambda c: listing.owned_files_page(
            c, who.user_id, after, limit + 1))
    return paged(request, response, rows, limit, lambda r: [r["created_at"], r["id"]])


async def _readable(node: NodeDep, who: Caller, file_id: str) -> dict[str, Any]:
    """The file's record if `who` may read it (users: files they uploaded or their jobs
    print), else not found."""
    record = await read(node, lambda c: queries.get_file(c, file_id))
    if record is not None and not who.staff and not await read(
            node, lambda c: may_use_file(c, who.user_id, file_id)):
        record = None
    found_record: dict[str, Any] = found(record, "file", file_id)
    return found_record


@router.get("/{file_id}/metadata")
async def file_facts(file_id: str, node: NodeDep, who: Caller) -> dict[str, Any]:
    """What the slicer wrote into the file: slicer, estimated time (s), filament (g, mm,
    type), nozzle diameter, layer height, printer model, bed temperature, thumbnails (format
    and size), and `weight_grams` (the filament weight rounded up, which a job may omit).
    Null where the file says nothing."""
    await _readable(node, who, file_id)
    meta = await file_metadata(node, file_id)
    if meta is None:
        raise ApiError(503, "file_unavailable", "no reachable node holds this file right now")
    return metadata_view(file_id, meta)


@router.get("/{file_id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/qoi": {}, "image/jpeg": {}}}})
async def file_thumbnail(file_id: str, node: NodeDep, who: Caller,
                         width: Annotated[int | None, Query(ge=1, le=4096)] = None,
                         height: Annotated[int | None, Query(ge=1, le=4096)] = None
                         ) -> Response:
    """A picture the slicer embedded: the largest, or the smallest at least `width` x
    `height`. 404 `no_thumbnail` when the file has none."""
    await _readable(node, who, file_id)
    meta = await file_metadata(node, file_id)
    if meta is None:
        raise ApiError(503, "file_unavailable", "no reachable node holds this file right now")
    picture = chosen_thumbnail(meta, width, height)
    # A file's pictures never change: a page showing many cards asks once, even for none.
    cached = {"Cache-Control": "private, max-age=86400, immutable"}
    if picture is None:
        raise ApiError(404, "no_thumbnail", "the file has no picture from its slicer",
                       headers=cached)
    try:
        data = picture.data()
    except ValueError:
        raise ApiError(404, "no_thumbnail", "the file's picture is damaged",
                       headers=cached) from None
    return Response(data, media_type=picture.media_type, headers={
        "Cache-Control": "private, max-age=86400, immutable",  # the id is the content's hash
        "X-Content-Type-Options": "nosniff"})


@router.get("/{file_id}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download_file(file_id: str, node: NodeDep, who: Caller) -> Response:
    """The file's content under the name the caller gave it (their latest upload of it),
    else its stored (first) name (users: files they uploaded or their jobs print; any other
    is not found)."""
    record = await _readable(node, who, file_id)
    if not await node.hold_blob(file_id):
        raise ApiError(503, "file_unavailable", "no reachable node holds this file right now")
    own = await read(node, lambda c: name_for(c, who.user_id, file_id))
    name: str = own or record["name"]
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    disposition = (f'attachment; filename="{ascii_name}"; '
                   f"filename*=UTF-8''{quote(name, safe='')}")
    return FileResponse(node.blobs.path(file_id), media_type="application/octet-stream",
                        headers={"Content-Disposition": disposition})


@internal.put("/{sha}", status_code=204)
async def receive_blob(sha: str, request: Request, node: NodeDep) -> Response:
    """A peer's copy of a blob; kept only if the content hashes to `sha`."""
    if not SHA256_PATTERN.match(sha):
        raise ApiError(422, "invalid_id", "not a SHA-256", "sha")
    # The body limit middleware refuses more than MAX_UPLOAD_MB while it streams in.
    try:
        with node.blobs.incoming(expected_sha=sha) as blob:
            async for piece in request.stream():
                await asyncio.to_thread(blob.write, piece)
            await asyncio.to_thread(blob.commit)
    except ValueError as exc:
        raise ApiError(422, "hash_mismatch", str(exc), "sha") from None
    return Response(status_code=204)


@internal.get("/{sha}")
async def send_blob(sha: str, node: NodeDep) -> Response:
    """This node's copy of a blob, if it has one."""
    if not node.blobs.has(sha):
        raise ApiError(404, "blob_not_found", "this node does not hold that blob")
    return FileResponse(node.blobs.path(sha), media_type="application/octet-stream")
