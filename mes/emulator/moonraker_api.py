"""Moonraker's HTTP API with a Klipper host behind it (the part a print farm uses), served
for emulated printers, answering as Moonraker 0.11.0 with Kalico's Klipper host does
(tests/test_real_moonraker.py runs the same client against the real one).

Moonraker answers `{"result": ...}`, or `{"error": {"code", "message"}}` with the HTTP
status in `code`. Klipper's refusals (a print already running, a missing file) are 400 with
Klipper's message; PAUSE, RESUME and CANCEL_PRINT where there is nothing to do succeed. One
Starlette app serves every printer; the printer is chosen by the connection's local port.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mes.emulator.lookup import Handler, emulator_app, printer_for, serve
from mes.emulator.printer import Phase, Printer, PrinterError, clean_path

MOONRAKER_VERSION = "v0.11.0-emulated"
API_VERSION = [1, 5, 0]
KLIPPER_VERSION = "v2026.10.0-emulated"
# What Klipper says after POST /printer/emergency_stop (Kalico 2026.10 with Moonraker 0.11).
SHUTDOWN_MESSAGE = ("Shutdown due to webhooks request\nOnce the underlying issue is corrected, "
                    "use the\n\"FIRMWARE_RESTART\" command to reset the firmware, reload the\n"
                    "config, and restart the host software.\nPrinter is shutdown\n")

Endpoint = Callable[[Request], Awaitable[Response]]

# print_stats.state for each phase of the emulated printer.
PRINT_STATES = {Phase.IDLE: "standby", Phase.PRINTING: "printing", Phase.PAUSED: "paused",
                Phase.FINISHED: "complete", Phase.STOPPED: "cancelled"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message}}, status_code=status)


def _result(result: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"result": result}, status_code=status)


def _require_klippy(printer: Printer) -> None:
    """Klipper shut down refuses every G-code command: 400 "Unknown", as the real host
    answers (the reason is only in Moonraker's traceback)."""
    if not printer.connected:
        raise PrinterError(400, "Unknown")


# -- objects ------------------------------------------------------------------------------


def objects(printer: Printer) -> dict[str, dict[str, Any]]:
    """Every object a query may name, with its fields now."""
    now = printer.now()
    job = printer.job
    temps = printer.temperatures()
    progress = printer.progress()
    fraction = 0.0 if progress is None else round(progress / 100.0, 4)
    phase = printer.phase
    state = "shutdown" if not printer.connected else "ready"
    message = SHUTDOWN_MESSAGE if not printer.connected else "Printer is ready"
    active = printer.active_job
    return {
        "webhooks": {"state": state, "state_message": message},
        "print_stats": {
            "filename": "" if job is None else job.path,
            "total_duration": 0.0 if job is None else round(job.elapsed(now), 3),
            "print_duration": round(printer.print_time(), 3),
            "filament_used": 0.0,
            "state": PRINT_STATES[phase],
            "message": "",
            "info": {"total_layer": None, "current_layer": None},
        },
        "virtual_sdcard": {
            "file_path": None if active is None else f"/gcodes/{active.path}",
            "progress": fraction if job is not None else 0.0,
            "is_active": phase is Phase.PRINTING,
            "file_position": 0 if job is None else int(job.size * fraction),
            "file_size": 0 if job is None else job.size,
        },
        "extruder": {"temperature": temps["tool0"][0], "target": temps["tool0"][1],
                     "power": 0.0, "pressure_advance": 0.0, "smooth_time": 0.04},
        "heater_bed": {"temperature": temps["bed"][0], "target": temps["bed"][1],
                       "power": 0.0},
        "display_status": {"progress": fraction if job is not None else 0.0, "message": None},
        "pause_resume": {"is_paused": phase is Phase.PAUSED},
    }


async def query(request: Request, printer: Printer) -> Response:
    """GET /printer/objects/query?obj[=field,field]&...: the named objects (unknown ones are
    left out, as Klipper does)."""
    available = objects(printer)
    status: dict[str, Any] = {}
    for name, fields in request.query_params.multi_items():
        found = available.get(name)
        if found is None:
            continue
        wanted = [f for f in fields.split(",") if f]
        status[name] = {k: v for k, v in found.items() if not wanted or k in wanted}
    return _result({"eventtime": round(time.monotonic(), 3), "status": status})


async def server_info(request: Request, printer: Printer) -> Response:
    """GET /server/info."""
    return _result({
        "klippy_connected": True,
        "klippy_state": "ready" if printer.connected else "shutdown",
        "components": ["file_manager", "klippy_apis", "history"],
        "failed_components": [], "registered_directories": ["config", "gcodes"],
        "warnings": [], "websocket_count": 0, "moonraker_version": MOONRAKER_VERSION,
        "api_version": API_VERSION, "api_version_string": ".".join(map(str, API_VERSION)),
    })


async def printer_info(request: Request, printer: Printer) -> Response:
    """GET /printer/info."""
    return _result({
        "state": "ready" if printer.connected else "shutdown",
        "state_message": "Printer is ready" if printer.connected else SHUTDOWN_MESSAGE,
        "hostname": f"emulated-{printer.port}", "software_version": KLIPPER_VERSION,
        "klipper_path": "/emulated/klipper", "python_path": "/emulated/python",
        "log_file": "/emulated/klippy.log", "config_file": "/emulated/printer.cfg",
    })


# -- files --------------------------------------------------------------------------------


async def upload(request: Request, printer: Printer) -> Response:
    """POST /server/files/upload: multipart `file`, optional `root` (gcodes), `path`,
    `print`."""
    async with request.form() as form:
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile) or not upload_file.filename:
            raise PrinterError(400, "No file name specifed in upload form")
        root = str(form.get("root") or "gcodes")
        if root != "gcodes":
            raise PrinterError(400, f"Invalid root request: {root}")
        folder = str(form.get("path") or "").strip("/")
        name = f"{folder}/{upload_file.filename}" if folder else upload_file.filename
        want_print = str(form.get("print", "")).lower() == "true"
        data = await upload_file.read()
    path = clean_path(name)
    if printer.printing_file(path):
        raise PrinterError(403, "Forbidden")
    stored = printer.store(path, data)
    started = False
    if want_print and printer.connected and not printer.busy:
        printer.start(stored.path)
        started = True
    item = {"path": stored.path, "root": "gcodes", "modified": stored.uploaded,
            "size": stored.size, "permissions": "rw"}
    return JSONResponse({"item": item, "print_started": started, "print_queued": False,
                         "action": "create_file"}, status_code=201)


async def list_files(request: Request, printer: Printer) -> Response:
    """GET /server/files/list?root=gcodes."""
    return _result([{"path": f.path, "modified": f.uploaded, "size": f.size,
                     "permissions": "rw"} for f in printer.files.values()])


async def delete_file(request: Request, printer: Printer) -> Response:
    """DELETE /server/files/gcodes/{path}: 400 "Bad Request" when absent and 403 "Forbidden"
    while it prints, as Moonraker 0.11.0 answers."""
    path = clean_path(request.path_params["path"])
    if path not in printer.files:
        raise PrinterError(400, "Bad Request")
    if printer.printing_file(path):
        raise PrinterError(403, "Forbidden")
    printer.delete(path)
    item = {"path": path, "root": "gcodes", "size": 0, "modified": 0, "permissions": ""}
    return _result({"item": item, "action": "delete_file"})


# -- print control ------------------------------------------------------------------------


async def start(request: Request, printer: Printer) -> Response:
    """POST /printer/print/start?filename=: 400 when busy or the file is missing."""
    _require_klippy(printer)
    name = request.query_params.get("filename")
    if not name:
        raise PrinterError(400, "No value for argument 'filename'")
    path = clean_path(name)
    if printer.busy:
        raise PrinterError(400, "SD busy")
    if path not in printer.files:
        raise PrinterError(400, "Unable to open file")
    printer.start(path)
    return _result("ok")


async def pause(request: Request, printer: Printer) -> Response:
    """POST /printer/print/pause: pauses a print; nothing to pause is still ok (the real
    Klipper then stays "paused" in pause_resume until a resume: nothing here relies on it)."""
    _require_klippy(printer)
    if printer.phase is Phase.PRINTING:
        printer.pause()
    return _result("ok")


async def resume(request: Request, printer: Printer) -> Response:
    """POST /printer/print/resume: resumes a paused print; otherwise ok, nothing done."""
    _require_klippy(printer)
    if printer.phase is Phase.PAUSED:
        printer.resume()
    return _result("ok")


async def cancel(request: Request, printer: Printer) -> Response:
    """POST /printer/print/cancel: stops a print; with none it is ok as well."""
    _require_klippy(printer)
    if printer.busy:
        printer.stop()
    return _result("ok")


async def emergency_stop(request: Request, printer: Printer) -> Response:
    """POST /printer/emergency_stop: Klipper shuts down (a running print is lost)."""
    printer.disconnect()
    return _result("ok")


async def firmware_restart(request: Request, printer: Printer) -> Response:
    """POST /printer/firmware_restart: Klipper is ready again."""
    printer.connect()
    return _result("ok")


# -- app ----------------------------------------------------------------------------------


async def emulator_status(request: Request) -> Response:
    """GET /emulator/status (no auth): state, start counters and current file."""
    printer = printer_for(request)
    return JSONResponse({"api": "Moonraker", "state": str(printer.phase), **printer.summary()})


def create_app(printers: Mapping[int, Printer], api_key: str) -> Starlette:
    """Build the app serving `printers` (keyed by local port) with Moonraker's API; every
    request but the emulator's own needs `X-Api-Key` (401 without it, as Moonraker)."""

    def guarded(handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            key = request.headers.get("x-api-key") or ""
            if not secrets.compare_digest(key.encode(), api_key.encode()):
                return _error(401, "Unauthorized")
            return await serve(request, handler, _error)

        return endpoint

    def route(path: str, handler: Handler, *methods: str) -> Route:
        return Route(path, guarded(handler), methods=list(methods))

    routes = [
        Route("/emulator/status", emulator_status, methods=["GET"]),
        route("/server/info", server_info, "GET"),
        route("/printer/info", printer_info, "GET"),
        route("/printer/objects/query", query, "GET"),
        route("/server/files/upload", upload, "POST"),
        route("/server/files/list", list_files, "GET"),
        route("/server/files/gcodes/{path:path}", delete_file, "DELETE"),
        route("/printer/print/start", start, "POST"),
        route("/printer/print/pause", pause, "POST"),
        route("/printer/print/resume", resume, "POST"),
        route("/printer/print/cancel", cancel, "POST"),
        route("/printer/emergency_stop", emergency_stop, "POST"),
        route("/printer/firmware_restart", firmware_restart, "POST"),
    ]

    app = emulator_app(routes, printers, _error)
    return app
