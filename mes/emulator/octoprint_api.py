"""The OctoPrint 1.11 REST API (the part a print farm uses), served for emulated printers.

One Starlette app serves every printer; the printer is chosen by the local port of the
connection (``scope["server"]``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mes.emulator.lookup import Handler, emulator_app, printer_for, serve
from mes.emulator.printer import Phase, Printer, PrinterError, StoredFile, clean_path

SERVER_VERSION = "1.11.8"
TRUE_VALUES = ("true", "yes", "y", "1")

Endpoint = Callable[[Request], Awaitable[Response]]


def state_text(printer: Printer) -> str:
    """OctoPrint's ``state.text``: Offline, Operational, Printing or Paused."""
    if not printer.connected:
        return "Offline"
    return {Phase.PRINTING: "Printing", Phase.PAUSED: "Paused"}.get(printer.phase, "Operational")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _no_content() -> Response:
    return Response(status_code=204)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise PrinterError(400, "Malformed JSON body") from exc
    if not isinstance(body, dict):
        raise PrinterError(400, "Expected a JSON object")
    return body


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrinterError(400, f"Not a number: {value!r}")
    return float(value)


# -- files --------------------------------------------------------------------------------


def _file_entry(request: Request, printer: Printer, stored: StoredFile) -> dict[str, Any]:
    url = f"{str(request.base_url).rstrip('/')}/api/files/local/{quote(stored.path)}"
    entry: dict[str, Any] = {
        "name": stored.name,
        "display": stored.name,
        "path": stored.path,
        "origin": "local",
        "type": "machinecode",
        "typePath": ["machinecode", "gcode"],
        "size": stored.size,
        "date": int(stored.uploaded),
        "refs": {"resource": url},
        "gcodeAnalysis": {"estimatedPrintTime": printer.job_time},
    }
    record = printer.history.get(stored.path)
    if record is not None:
        entry["prints"] = {
            "success": record.successes,
            "failure": record.failures,
            "last": {
                "date": record.last_date,
                "success": record.last_success,
                "printTime": record.last_print_time,
            },
        }
    return entry


async def list_files(request: Request, printer: Printer) -> Response:
    """GET /api/files and /api/files/local."""
    files = [_file_entry(request, printer, f) for f in printer.files.values()]
    return JSONResponse({"files": files, "free": 10**10, "total": 2 * 10**10})


async def upload(request: Request, printer: Printer) -> Response:
    """POST /api/files/local: multipart ``file``, optional ``select``, ``print``, ``path``."""
    async with request.form() as form:
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile) or not upload_file.filename:
            raise PrinterError(400, "No file included")
        folder = str(form.get("path") or "").strip("/")
        path = clean_path(f"{folder}/{upload_file.filename}" if folder else upload_file.filename)
        want_print = str(form.get("print", "")).lower() in TRUE_VALUES
        want_select = want_print or str(form.get("select", "")).lower() in TRUE_VALUES
        no_overwrite = str(form.get("noOverwrite", "")).lower() in TRUE_VALUES
        data = await upload_file.read()
    stored = printer.store(path, data, overwrite=not no_overwrite)
    ready = printer.connected and not printer.busy
    if want_print and ready:
        printer.start(stored.path)
    elif want_select and ready:
        printer.select(stored.path)
    entry = _file_entry(request, printer, stored)
    body = {
        "done": True,
        "files": {"local": entry},
        "effectiveSelect": want_select and ready,
        "effectivePrint": want_print and ready,
    }
    return JSONResponse(body, status_code=201, headers={"Location": entry["refs"]["resource"]})


async def file_info(request: Request, printer: Printer) -> Response:
    """GET /api/files/local/NAME."""
    stored = printer.file(request.path_params["path"])
    return JSONResponse(_file_entry(request, printer, stored))


async def file_command(request: Request, printer: Printer) -> Response:
    """POST /api/files/local/NAME ``{"command": "select", "print": bool}``."""
    stored = printer.file(request.path_params["path"])
    body = await _json_body(request)
    if body.get("command") != "select":
        raise PrinterError(400, f"Unsupported command: {body.get('command')!r}")
    if body.get("print") is True:
        printer.start(stored.path)
    else:
        printer.select(stored.path)
    return _no_content()


async def delete_file(request: Request, printer: Printer) -> Response:
    """DELETE /api/files/local/NAME: 409 while it prints."""
    printer.delete(request.path_params["path"])
    return _no_content()


# -- job ----------------------------------------------------------------------------------


def _progress(printer: Printer) -> dict[str, Any]:
    job = printer.job
    empty: dict[str, Any] = {
        "completion": None,
        "filepos": None,
        "printTime": None,
        "printTimeLeft": None,
        "printTimeLeftOrigin": None,
    }
    if job is None or job.path != printer.selected or job.state is Phase.STOPPED:
        return empty
    completion = printer.progress() or 0.0
    return {
        "completion": completion,
        "filepos": int(job.size * completion / 100),
        "printTime": int(printer.print_time()),
        "printTimeLeft": math.ceil(printer.time_left()),
        "printTimeLeftOrigin": "estimate",
    }


async def job_info(request: Request, printer: Printer) -> Response:
    """GET /api/job."""
    selected = printer.files.get(printer.selected) if printer.selected else None
    record = printer.history.get(selected.path) if selected else None
    file_part: dict[str, Any] = {
        "name": selected.name if selected else None,
        "display": selected.name if selected else None,
        "path": selected.path if selected else None,
        "origin": "local" if selected else None,
        "size": selected.size if selected else None,
        "date": int(selected.uploaded) if selected else None,
    }
    body = {
        "job": {
            "file": file_part,
            "estimatedPrintTime": printer.job_time if selected else None,
            "averagePrintTime": None,
            "lastPrintTime": record.last_print_time if record and record.last_success else None,
            "filament": None,
            "user": "farm" if selected else None,
        },
        "progress": _progress(printer),
        "state": state_text(printer),
    }
    return JSONResponse(body)


async def job_command(request: Request, printer: Printer) -> Response:
    """POST /api/job: start, restart, cancel, pause (action pause/resume/toggle)."""
    body = await _json_body(request)
    command = body.get("command")
    if command not in ("start", "restart", "cancel", "pause"):
        raise PrinterError(400, f"Unknown command: {command!r}")
    if not printer.connected:
        raise PrinterError(409, "Printer is not operational")
    phase = printer.phase
    if command == "start":
        if printer.busy:
            raise PrinterError(409, "Printer is already printing")
        if printer.selected is not None:
            printer.start(printer.selected)
    elif command == "restart":
        job = printer.active_job
        if job is None or phase is not Phase.PAUSED:
            raise PrinterError(409, "Printer is not paused")
        printer.stop()
        printer.start(job.path)
    elif not printer.busy:
        raise PrinterError(409, "Printer is neither printing nor paused")
    elif command == "cancel":
        printer.stop()
    else:
        action = body.get("action", "toggle")
        if action not in ("pause", "resume", "toggle"):
            raise PrinterError(400, f"Unknown action: {action!r}")
        if phase is Phase.PRINTING and action in ("pause", "toggle"):
            printer.pause()
        elif phase is Phase.PAUSED and action in ("resume", "toggle"):
            printer.resume()
    return _no_content()


# -- printer and connection ---------------------------------------------------------------


def _temperature(printer: Printer) -> dict[str, Any]:
    return {
        name: {"actual": actual, "target": target, "offset": 0}
        for name, (actual, target) in printer.temperatures().items()
    }


async def printer_state(request: Request, printer: Printer) -> Response:
    """GET /api/printer: 409 while disconnected."""
    if not printer.connected:
        raise PrinterError(409, "Printer is not operational")
    phase = printer.phase
    printing = phase is Phase.PRINTING
    paused = phase is Phase.PAUSED
    flags = {
        "operational": True,
        "printing": printing,
        "paused": paused,
        "pausing": False,
        "cancelling": False,
        "finishing": False,
        "resuming": False,
        "sdReady": False,
        "ready": not (printing or paused),
        "error": False,
        "closedOrError": False,
    }
    body: dict[str, Any] = {
        "temperature": _temperature(printer),
        "sd": {"ready": False},
        "state": {"text": state_text(printer), "flags": flags, "error": ""},
    }
    excluded = set(request.query_params.get("exclude", "").split(","))
    return JSONResponse({k: v for k, v in body.items() if k not in excluded})


async def tool_state(request: Request, printer: Printer) -> Response:
    """GET /api/printer/tool."""
    if not printer.connected:
        raise PrinterError(409, "Printer is not operational")
    return JSONResponse({"tool0": _temperature(printer)["tool0"]})


async def bed_state(request: Request, printer: Printer) -> Response:
    """GET /api/printer/bed."""
    if not printer.connected:
        raise PrinterError(409, "Printer is not operational")
    return JSONResponse({"bed": _temperature(printer)["bed"]})


async def tool_command(request: Request, printer: Printer) -> Response:
    """POST /api/printer/tool ``{"command": "target", "targets": {"tool0": T}}``."""
    body = await _json_body(request)
    command = body.get("command")
    if command == "target":
        targets = body.get("targets")
        if not isinstance(targets, dict) or set(targets) - {"tool0"} or not targets:
            raise PrinterError(400, "Invalid targets")
        printer.set_targets(tool=_number(targets["tool0"]))
    elif command == "offset":
        if not printer.connected:
            raise PrinterError(409, "Printer is not operational")
    else:
        raise PrinterError(400, f"Unknown command: {command!r}")
    return _no_content()


async def bed_command(request: Request, printer: Printer) -> Response:
    """POST /api/printer/bed ``{"command": "target", "target": T}``."""
    body = await _json_body(request)
    command = body.get("command")
    if command == "target":
        printer.set_targets(bed=_number(body.get("target")))
    elif command == "offset":
        if not printer.connected:
            raise PrinterError(409, "Printer is not operational")
    else:
        raise PrinterError(400, f"Unknown command: {command!r}")
    return _no_content()


async def connection_state(request: Request, printer: Printer) -> Response:
    """GET /api/connection."""
    connected = printer.connected
    current = {
        "state": state_text(printer) if connected else "Closed",
        "port": "VIRTUAL" if connected else None,
        "baudrate": 115200 if connected else None,
        "printerProfile": "_default",
    }
    options = {
        "ports": ["VIRTUAL"],
        "baudrates": [250000, 230400, 115200, 57600, 38400, 19200, 9600],
        "printerProfiles": [{"id": "_default", "name": "Default"}],
        "portPreference": "VIRTUAL",
        "baudratePreference": 115200,
        "printerProfilePreference": "_default",
        "autoconnect": True,
    }
    return JSONResponse({"current": current, "options": options})


async def connection_command(request: Request, printer: Printer) -> Response:
    """POST /api/connection: connect (port VIRTUAL or AUTO), disconnect, fake_ack."""
    body = await _json_body(request)
    command = body.get("command")
    if command == "connect":
        port = body.get("port", "AUTO")
        if port not in ("VIRTUAL", "AUTO", None):
            raise PrinterError(400, f"Invalid port: {port!r}")
        printer.connect()
    elif command == "disconnect":
        printer.disconnect()
    elif command != "fake_ack":
        raise PrinterError(400, f"Unknown command: {command!r}")
    return _no_content()


async def version(request: Request, printer: Printer) -> Response:
    """GET /api/version."""
    return JSONResponse(
        {"api": "0.1", "server": SERVER_VERSION, "text": f"OctoPrint {SERVER_VERSION}"}
    )


async def server_info(request: Request, printer: Printer) -> Response:
    """GET /api/server."""
    return JSONResponse({"version": SERVER_VERSION, "safemode": None})


# -- app ----------------------------------------------------------------------------------


async def emulator_status(request: Request) -> Response:
    """GET /emulator/status (no auth): state, start counters and current file."""
    printer = printer_for(request)
    return JSONResponse({"api": "OctoPrint", "state": state_text(printer), **printer.summary()})


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key") or request.query_params.get("apikey")
    if key is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            key = token.strip()
    return key


def create_app(printers: Mapping[int, Printer], api_key: str) -> Starlette:
    """Build the app serving ``printers`` (keyed by local port) with OctoPrint's API."""

    def guarded(handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            key = _presented_key(request)
            if key is None or not secrets.compare_digest(key.encode(), api_key.encode()):
                return _error(403, "Forbidden: missing or invalid API key")
            return await serve(request, handler, _error)

        return endpoint

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, guarded(handler), methods=[method])

    routes = [
        Route("/emulator/status", emulator_status, methods=["GET"]),
        route("/api/version", version, "GET"),
        route("/api/server", server_info, "GET"),
        route("/api/connection", connection_state, "GET"),
        route("/api/connection", connection_command, "POST"),
        route("/api/printer", printer_state, "GET"),
        route("/api/printer/tool", tool_state, "GET"),
        route("/api/printer/tool", tool_command, "POST"),
        route("/api/printer/bed", bed_state, "GET"),
        route("/api/printer/bed", bed_command, "POST"),
        route("/api/job", job_info, "GET"),
        route("/api/job", job_command, "POST"),
        route("/api/files", list_files, "GET"),
        route("/api/files/local", list_files, "GET"),
        route("/api/files/local", upload, "POST"),
        route("/api/files/local/{path:path}", file_info, "GET"),
        route("/api/files/local/{path:path}", file_command, "POST"),
        route("/api/files/local/{path:path}", delete_file, "DELETE"),
    ]

    app = emulator_app(routes, printers, _error)
    return app
