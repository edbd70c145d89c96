"""One error shape for every answer that is not a success."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mes.app.errors import DomainError, Kind

log = logging.getLogger(__name__)

# The HTTP status of each kind of the application layer's DomainError (one table).
STATUS_OF_KIND: dict[Kind, int] = {"invalid": 422, "not_found": 404, "rule": 409,
                                   "forbidden": 403, "quota": 429, "unavailable": 503}
# Validation error types of our own that answer with their own code instead of invalid_input.
OWN_CODES = frozenset({"invalid_url"})


class ApiError(Exception):
    """An answer with `status`, a stable `code`, a message and the field it concerns."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": {"code": code, "message": message, "field": field}}


def from_domain(error: DomainError) -> ApiError:
    """The HTTP answer of the application layer's error."""
    if error.kind == "unavailable" and error.retry_key is not None:
        key = error.retry_key
        return ApiError(503, error.code, f"{error.message}. Retry with the header "
                        f"'Idempotency-Key: {key}' so that it applies at most once",
                        error.field, headers={"Retry-After": "1", "Idempotency-Key": key})
    headers = {"Retry-After": "1"} if error.kind == "unavailable" else None
    return ApiError(STATUS_OF_KIND[error.kind], error.code, error.message, error.field,
                    headers=headers)


def _field_of(loc: Any) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, including FastAPI's own, answer in the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field), exc.status,
                            headers=exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return await _api_error(request, from_domain(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"type": "invalid", "msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("malformed_json", "the body is not valid JSON"), 400)
        field = _field_of(first.get("loc", ()))
        message = str(first.get("msg", "invalid value"))
        if first.get("type") == "extra_forbidden":
            message = f"unknown field {field!r}"
            if field == "status":
                message = "status cannot be set here; a new print job is always Queued"
        elif field:
            message = f"{field}: {message}"
        code = first.get("type") if first.get("type") in OWN_CODES else "invalid_input"
        return JSONResponse(error_body(str(code), message, field), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed",
                413: "body_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal error"), 500)
