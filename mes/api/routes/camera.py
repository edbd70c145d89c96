"""`/api/v1/printers/{id}/camera`: a printer's camera picture, fetched by the node."""

from __future__ import annotations

from fastapi import Request, Response

from mes.api.auth import authenticated_router
from mes.api.camera import CameraError, Cameras
from mes.api.deps import NodeDep, found, read
from mes.api.errors import ApiError
from mes.state import queries

router = authenticated_router("/printers", "printers")

PICTURE = {"content": {"image/jpeg": {}, "image/png": {}},
           "description": "the camera's latest picture (at most 2 s old)"}


@router.get("/{printer_id}/camera", response_class=Response, responses={200: PICTURE})
async def camera_picture(printer_id: str, request: Request, node: NodeDep) -> Response:
    """The picture of the printer's camera (its `camera_url`: a JPEG or PNG snapshot, or the
    first frame of an MJPEG stream), fetched by this node under the printers' network rules;
    404 `no_camera` without a camera address, 502 `camera_unavailable` when it gives none."""
    printer = found(await read(node, lambda c: queries.get_printer(c, printer_id)), "printer",
                    printer_id)
    url = printer.get("camera_url")
    if not url:
        raise ApiError(404, "no_camera", f"printer {printer_id!r} has no camera address")
    cameras: Cameras = request.app.state.cameras
    try:
        shot = await cameras.snapshot(printer_id, url)
    except CameraError as exc:
        raise ApiError(502, "camera_unavailable", str(exc)) from None
    return Response(shot.body, media_type=shot.media_type,
                    headers={"Cache-Control": "private, max-age=2"})
