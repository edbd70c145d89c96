"""The PrusaLink v1 API (the part a print farm uses), served for emulated printers.

Auth is ``X-Api-Key`` (403 when wrong) or HTTP Digest with user ``maker`` and the API key as
password (401 with a challenge when no credentials are given). One Starlette app serves every
printer; the printer is chosen by the local port of the connection (``scope["server"]``).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mes.emulator.lookup import Handler, emulator_app, printer_for, serve
from mes.emulator.printer import (
    Job,
    Printer,
    PrinterError,
    StoredFile,
    check_printable,
    clean_path,
)

REALM = "Administrator"
DIGEST_USER = "maker"
STORAGE = "local"
FREE_SPACE = 10**10

Endpoint = Callable[[Request], Awaitable[Response]]

_DIGEST_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "code": str(status),
        "title": HTTPStatus(status).phrase.upper(),
        "text": message,
        "url": "https://help.prusa3d.com/",
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _no_content() -> Response:
    return Response(status_code=204)


def _flag(request: Request, header: str) -> bool:
    """An RFC 8941 boolean header: ``?1`` or ``?0`` (absent means false)."""
    value = request.headers.get(header)
    if value is None or value.strip() == "?0":
        return False
    if value.strip() == "?1":
        return True
    raise PrinterError(400, f"{header} must be ?1 or ?0, not {value!r}")


def _storage_path(request: Request) -> str:
    if request.path_params["storage"] != STORAGE:
        raise PrinterError(404, f"Storage not found: {request.path_params['storage']}")
    return clean_path(request.path_params["path"])


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _digest_ok(request: Request, api_key: str) -> bool:
    scheme, _, params = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "digest":
        return False
    fields = {m[0]: m[1] or m[2] for m in _DIGEST_FIELD.findall(params)}
    if fields.get("username") != DIGEST_USER or "response" not in fields:
        return False
    uri = fields.get("uri", "")
    if uri.split("?", 1)[0] != request.url.path:
        return False
    ha1 = _md5(f"{DIGEST_USER}:{REALM}:{api_key}")
    ha2 = _md5(f"{request.method}:{uri}")
    nonce = fields.get("nonce", "")
    if fields.get("qop"):
        parts = (ha1, nonce, fields.get("nc", ""), fields.get("cnonce", ""), fields["qop"], ha2)
        expected = _md5(":".join(parts))
    else:
        expected = _md5(f"{ha1}:{nonce}:{ha2}")
    return secrets.compare_digest(expected, fields["response"])


def _challenge() -> JSONResponse:
    header = (
        f'Digest realm="{REALM}", qop="auth", '
        f'nonce="{secrets.token_hex(16)}", opaque="{secrets.token_hex(8)}"'
    )
    return _error(401, "Authorization required", {"WWW-Authenticate": header})


# -- info and status ----------------------------------------------------------------------


async def version(request: Request, printer: Printer) -> Response:
    """GET /api/version."""
    return JSONResponse(
        {
            "api": "2.0.0",
            "server": "2.1.2",
            "version": "0.7.2",
            "printer": "1.3.1",
            "text": "PrusaLink",
            "firmware": "3.14.1-8219",
            "sdk": "0.7.2",
            "capabilities": {"upload-by-put": True},
        }
    )


async def info(request: Request, printer: Printer) -> Response:
    """GET /api/v1/info."""
    return JSONResponse(
        {
            "mmu": False,
            "name": f"mock-{printer.port}",
            "location": "emulator",
            "farm_mode": False,
            "nozzle_diameter": 0.4,
            "min_extrusion_temp": 170,
            "serial": f"MOCK{printer.port:08d}",
            "sd_ready": False,
            "active_camera": False,
            "hostname": f"mock-printer-{printer.port}",
            "port": "/dev/null",
            "network_error_chime": False,
        }
    )


def _job_times(printer: Printer, job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "progress": round(printer.progress() or 0.0, 2),
        "time_remaining": math.ceil(printer.time_left()),
        "time_printing": int(printer.print_time()),
    }


async def status(request: Request, printer: Printer) -> Response:
    """GET /api/v1/status: printer telemetry, plus the job while there is one."""
    temps = printer.temperatures()
    body: dict[str, Any] = {
        "printer": {
            "state": str(printer.phase),
            "temp_nozzle": temps["tool0"][0],
            "target_nozzle": temps["tool0"][1],
            "temp_bed": temps["bed"][0],
            "target_bed": temps["bed"][1],
            "axis_z": 0.2 if printer.busy else 10.0,
            "flow": 100,
            "speed": 100,
            "fan_hotend": 5000 if printer.busy else 0,
            "fan_print": 3000 if printer.busy else 0,
        },
        "storage": {
            "name": "LOCAL",
            "path": "/local",
            "read_only": False,
            "free_space": FREE_SPACE,
        },
    }
    if printer.job is not None:
        body["job"] = _job_times(printer, printer.job)
    return JSONResponse(body)


async def storage(request: Request, printer: Printer) -> Response:
    """GET /api/v1/storage."""
    used = sum(f.size for f in printer.files.values())
    entry = {
        "name": "Local",
        "type": "LOCAL",
        "path": "/local",
        "print_files": used,
        "system_files": 0,
        "free_space": FREE_SPACE,
        "total_space": FREE_SPACE + used,
        "available": True,
        "read_only": False,
    }
    return JSONResponse({"storage_list": [entry]})


async def transfer(request: Request, printer: Printer) -> Response:
    """GET /api/v1/transfer: uploads complete within their request, so never a transfer."""
    return _no_content()


# -- job ----------------------------------------------------------------------------------


async def job_info(request: Request, printer: Printer) -> Response:
    """GET /api/v1/job: 204 when there has been no job."""
    job = printer.job
    if job is None:
        return _no_content()
    folder = job.path.rpartition("/")[0]
    body = {
        **_job_times(printer, job),
        "state": str(job.state),
        "inaccurate_estimates": False,
        "file": {
            "name": job.name,
            "display_name": job.name,
            "path": f"/{STORAGE}/{folder}" if folder else f"/{STORAGE}",
            "display_path": f"/{STORAGE}/{folder}" if folder else f"/{STORAGE}",
            "size": job.size,
            "m_timestamp": int(job.m_timestamp),
            "refs": {"download": f"/api/v1/files/{STORAGE}/{quote(job.path)}"},
        },
    }
    return JSONResponse(body)


def _job(request: Request, printer: Printer) -> Job:
    printer.now()
    job = printer.job
    if job is None or job.id != request.path_params["id"]:
        raise PrinterError(404, f"No job with id {request.path_params['id']}")
    return job


async def stop_job(request: Request, printer: Printer) -> Response:
    """DELETE /api/v1/job/{id}: 404 wrong id, 409 unless printing or paused."""
    _job(request, printer)
    printer.stop()
    return _no_content()


async def pause_job(request: Request, printer: Printer) -> Response:
    """PUT /api/v1/job/{id}/pause: 409 unless printing."""
    _job(request, printer)
    printer.pause()
    return _no_content()


async def resume_job(request: Request, printer: Printer) -> Response:
    """PUT /api/v1/job/{id}/resume: 409 unless paused."""
    _job(request, printer)
    printer.resume()
    return _no_content()


async def continue_job(request: Request, printer: Printer) -> Response:
    """PUT /api/v1/job/{id}/continue: never waiting for a timelapse capture, so 409."""
    _job(request, printer)
    raise PrinterError(409, "The job is not waiting to continue")


# -- files --------------------------------------------------------------------------------


def _file_entry(printer: Printer, stored: StoredFile) -> dict[str, Any]:
    return {
        "name": stored.name,
        "display_name": stored.name,
        "type": "PRINT_FILE",
        "read_only": False,
        "size": stored.size,
        "m_timestamp": int(stored.uploaded),
        "refs": {"download": f"/api/v1/files/{STORAGE}/{quote(stored.path)}"},
        "meta": {"estimated printing time (normal mode)": printer.job_time},
    }


def _folder(printer: Printer, folder: str) -> dict[str, Any] | None:
    prefix = f"{folder}/" if folder else ""
    children: list[dict[str, Any]] = []
    subfolders: set[str] = set()
    for path, stored in sorted(printer.files.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        if "/" in rest:
            subfolders.add(rest.split("/", 1)[0])
        else:
            children.append(_file_entry(printer, stored))
    if folder and not children and not subfolders:
        return None
    children += [
        {"name": name, "display_name": name, "type": "FOLDER", "read_only": False, "m_timestamp": 0}
        for name in sorted(subfolders)
    ]
    name = folder.rsplit("/", 1)[-1] if folder else STORAGE
    return {
        "name": name,
        "display_name": name,
        "type": "FOLDER",
        "read_only": False,
        "m_timestamp": 0,
        "children": children,
    }


async def storage_root(request: Request, printer: Printer) -> Response:
    """GET /api/v1/files/{storage}: the root folder listing."""
    if request.path_params["storage"] != STORAGE:
        raise PrinterError(404, f"Storage not found: {request.path_params['storage']}")
    return JSONResponse(_folder(printer, ""))


async def file_info(request: Request, printer: Printer) -> Response:
    """GET /api/v1/files/{storage}/{path}: a file or a folder."""
    path = _storage_path(request)
    stored = printer.files.get(path)
    if stored is not None:
        return JSONResponse(_file_entry(printer, stored))
    folder = _folder(printer, path)
    if folder is None:
        raise PrinterError(404, f"File not found: {path}")
    return JSONResponse(folder)


async def file_head(request: Request, printer: Printer) -> Response:
    """HEAD /api/v1/files/{storage}/{path}: Read-Only and Currently-Printed headers."""
    path = _storage_path(request)
    if path not in printer.files:
        return Response(status_code=404)
    printed = "?1" if printer.printing_file(path) else "?0"
    return Response(headers={"Read-Only": "?0", "Currently-Printed": printed})


async def upload(request: Request, printer: Printer) -> Response:
    """PUT /api/v1/files/{storage}/{path}: the raw body; Print-After-Upload, Overwrite."""
    path = _storage_path(request)
    check_printable(path)
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise PrinterError(415, "PUT the raw file as the body, not a multipart form")
    print_after = _flag(request, "Print-After-Upload")
    overwrite = _flag(request, "Overwrite")
    if path in printer.files and not overwrite:
        raise PrinterError(409, f"File already exists: {path}")
    if print_after and printer.busy:
        raise PrinterError(409, "Printer is busy")
    data = await request.body()
    printer.store(path, data, overwrite=overwrite)
    if print_after:
        printer.start(path)
    location = f"/api/v1/files/{STORAGE}/{quote(path)}"
    return Response(status_code=201, headers={"Location": location})


async def start_file(request: Request, printer: Printer) -> Response:
    """POST /api/v1/files/{storage}/{path}: start printing it; 409 when busy."""
    printer.start(_storage_path(request))
    return _no_content()


async def delete_file(request: Request, printer: Printer) -> Response:
    """DELETE /api/v1/files/{storage}/{path}: 409 while it prints."""
    printer.delete(_storage_path(request))
    return _no_content()


# -- app ----------------------------------------------------------------------------------


async def emulator_status(request: Request) -> Response:
    """GET /emulator/status (no auth): state, start counters and current file."""
    printer = printer_for(request)
    return JSONResponse({"api": "PrusaLink", "state": str(printer.phase), **printer.summary()})


def create_app(printers: Mapping[int, Printer], api_key: str) -> Starlette:
    """Build the app serving ``printers`` (keyed by local port) with PrusaLink's v1 API."""

    def guarded(handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            key = request.headers.get("x-api-key")
            if key is not None:
                if not secrets.compare_digest(key.encode(), api_key.encode()):
                    return _error(403, "Invalid API key")
            elif not _digest_ok(request, api_key):
                return _challenge()
            return await serve(request, handler, _error)

        return endpoint

    def route(path: str, handler: Handler, *methods: str) -> Route:
        return Route(path, guarded(handler), methods=list(methods))

    files = "/api/v1/files/{storage}/{path:path}"
    routes = [
        Route("/emulator/status", emulator_status, methods=["GET"]),
        route("/api/version", version, "GET"),
        route("/api/v1/info", info, "GET"),
        route("/api/v1/status", status, "GET"),
        route("/api/v1/storage", storage, "GET"),
        route("/api/v1/transfer", transfer, "GET"),
        route("/api/v1/job", job_info, "GET"),
        route("/api/v1/job/{id:int}", stop_job, "DELETE"),
        route("/api/v1/job/{id:int}/pause", pause_job, "PUT"),
        route("/api/v1/job/{id:int}/resume", resume_job, "PUT"),
        route("/api/v1/job/{id:int}/continue", continue_job, "PUT"),
        route("/api/v1/files/{storage}", storage_root, "GET"),
        route(files, file_head, "HEAD"),  # before GET, whose route also answers HEAD
        route(files, file_info, "GET"),
        route(files, upload, "PUT"),
        route(files, start_file, "POST"),
        route(files, delete_file, "DELETE"),
    ]

    app = emulator_app(routes, printers, _error)
    return app
