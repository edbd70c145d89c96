"""Request bodies within limits, enforced while they stream in (never buffered to check)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mes.api.errors import error_body

# Bodies of routes that take no file: JSON documents of a few fields.
JSON_LIMIT = 1 << 20
# What a multipart form may carry beside its file (boundaries, the job's fields).
FORM_OVERHEAD = 1 << 20


class BodyTooLarge(HTTPException):
    """The body grew past its route's limit while it was being received."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def upload_limits(api_prefix: str, max_upload_bytes: int) -> Callable[[str], int]:
    """The body limit of each path: uploads get MAX_UPLOAD_MB, everything else JSON_LIMIT."""
    blobs = f"{api_prefix}/internal/blobs/"
    forms = (f"{api_prefix}/files", f"{api_prefix}/print_jobs")

    def limit_for(path: str) -> int:
        if path.startswith(blobs):
            return max_upload_bytes
        if path.rstrip("/") in forms:
            return max_upload_bytes + FORM_OVERHEAD
        return JSON_LIMIT

    return limit_for


class BodyLimit:
    """ASGI middleware: refuse by Content-Length at once, else count bytes as they arrive."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            too_large = error_body("body_too_large",
                                   f"the request body is larger than {limit} bytes")
            await JSONResponse(too_large, 413, headers={"Connection": "close"})(
                scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
