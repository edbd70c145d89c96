"""RepRapFirmware 3.5's standalone `rr_` HTTP API (the part a print farm uses), served for
emulated Duet printers. No simulator of a Duet exists: the answers follow the firmware's own
source (HttpResponder.cpp, GCodes2.cpp, PrintMonitor.cpp, RepRap.cpp), as mes.printers.duet
describes them.

Sessions: `rr_connect?password=` with the emulator's API key as the machine password
(401 on any other request without a session; `sessionKey=yes` gives a key to send as
`X-Session-Key`). `rr_model?key=&flags=` serves the object model: a running print is
`processing`; M32 while printing, M0 while not paused and M25 with nothing printing answer
errors in `rr_reply`, as the firmware does. One Starlette app serves every printer; the
printer is chosen by the connection's local port.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mes.emulator.lookup import Handler, emulator_app, printer_for, serve
from mes.emulator.printer import Phase, Printer, PrinterError, clean_path

BOARD = "MB6HC"
SESSION_TIMEOUT_MS = 8000
GCODES = "0:/gcodes/"
MAX_SESSIONS = 8

Endpoint = Callable[[Request], Awaitable[Response]]

STATUS = {Phase.IDLE: "idle", Phase.PRINTING: "processing", Phase.PAUSED: "paused",
          Phase.FINISHED: "idle", Phase.STOPPED: "idle"}
_QUOTED = re.compile(r'^M(?:32|23)\s+"?([^"]+)"?\s*$')


class DuetState:
    """What the firmware keeps besides the printer: sessions, replies, sequence numbers."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, int], float] = {}
        self.reply: list[str] = []
        self.job_seq = 0
        self.reply_seq = 0
        self.last_job_id: int | None = None
        self.halted = False


def _states(request: Request) -> dict[int, DuetState]:
    states: dict[int, DuetState] = request.app.state.duet
    return states


def _duet(request: Request, printer: Printer) -> DuetState:
    return _states(request).setdefault(printer.port, DuetState())


def _path_of(name: str) -> str:
    """A printer file path (`x.gcode`) from an rr_ name (`0:/gcodes/x.gcode`)."""
    for prefix in (GCODES, "/gcodes/", "gcodes/"):
        if name.startswith(prefix):
            return clean_path(name[len(prefix):])
    return clean_path(name)


def _say(duet: DuetState, text: str) -> None:
    duet.reply.append(text)
    duet.reply_seq += 1


def _heaters(printer: Printer) -> list[dict[str, Any]]:
    temps = printer.temperatures()
    heaters = []
    for name in ("bed", "tool0"):
        actual, target = temps[name]
        heaters.append({"current": actual, "active": target, "standby": 0.0,
                        "state": "active" if target else "off", "avgPwm": 0.0,
                        "min": -10.0, "max": 285.0 if name == "tool0" else 120.0,
                        "sensor": 0 if name == "bed" else 1})
    return heaters


def model(printer: Printer, duet: DuetState, verbose: bool) -> dict[str, Any]:
    """The object model: every live field, and the non-live ones when `verbose`."""
    phase = printer.phase
    job = printer.job
    active = printer.active_job
    if job is not None and job.id != duet.last_job_id:
        duet.last_job_id = job.id
        duet.job_seq += 1
    progress = printer.progress() or 0.0
    status = "halted" if duet.halted else STATUS[phase]
    job_model: dict[str, Any] = {
        "duration": None if active is None else round(printer.print_time(), 1),
        "filePosition": 0 if active is None else int(active.size * progress / 100.0),
        "layer": None,
        "pauseDuration": 0,
        "timesLeft": {"file": None if active is None else round(printer.time_left(), 1),
                      "filament": None, "slicer": None},
        "warmUpDuration": 0,
    }
    if verbose:
        job_model["file"] = {
            "fileName": None if active is None else GCODES + active.path,
            "size": 0 if active is None else active.size, "filament": [], "height": 0,
            "layerHeight": 0, "numLayers": 0, "printTime": None, "simulatedTime": None,
            "generatedBy": "", "lastModified": None, "thumbnails": []}
        job_model["lastFileName"] = (None if active is not None or job is None
                                     else GCODES + job.path)
        job_model["lastDuration"] = None
    heat: dict[str, Any] = {"heaters": _heaters(printer)}
    if verbose:
        heat["bedHeaters"] = [0, -1, -1, -1]
        heat["chamberHeaters"] = [-1, -1]
    tool: dict[str, Any] = {"active": [printer.temperatures()["tool0"][1]], "standby": [0.0],
                            "state": "active", "number": 0}
    if verbose:
        tool.update({"heaters": [1], "extruders": [0], "name": ""})
    state: dict[str, Any] = {"status": status, "currentTool": 0, "upTime": 1000,
                             "messageBox": None}
    if verbose:
        state["displayMessage"] = ""
    return {"state": state, "job": job_model, "heat": heat, "tools": [tool],
            "seqs": {"job": duet.job_seq, "reply": duet.reply_seq, "state": 0}}


def _select(whole: dict[str, Any], key: str) -> Any:
    """The value at a dotted key (`job`, `job.file.fileName`, `tools`), or None."""
    value: Any = whole
    for part in [p for p in key.split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


# -- handlers -------------------------------------------------------------------------------


async def rr_model(request: Request, printer: Printer) -> Response:
    """GET /rr_model?key=&flags=: `{"key", "flags", "result"}`."""
    key = request.query_params.get("key", "")
    flags = request.query_params.get("flags", "")
    verbose = "f" not in flags  # `f`: live fields only
    whole = model(printer, _duet(request, printer), verbose)
    return JSONResponse({"key": key, "flags": flags, "result": _select(whole, key)})


async def rr_gcode(request: Request, printer: Printer) -> Response:
    """GET /rr_gcode?gcode=: runs what a farm sends; errors go to rr_reply."""
    duet = _duet(request, printer)
    for line in request.query_params.get("gcode", "").splitlines():
        _run(line.strip(), printer, duet)
    return JSONResponse({"buff": 255})


def _run(line: str, printer: Printer, duet: DuetState) -> None:
    command = line.split(" ", 1)[0].upper()
    if duet.halted and command not in ("M999", ""):
        _say(duet, f"Error: {command}: the machine is halted")
        return
    if command in ("M32", "M23"):
        match = _QUOTED.match(line)
        if match is None:
            _say(duet, f"Error: {command}: missing file name")
            return
        if printer.busy:
            _say(duet, f"Error: {command}: Cannot set file to print, because a file is "
                 "already being printed")
            return
        path = _path_of(match.group(1))
        if path not in printer.files:
            _say(duet, f'Error: {command}: GCode file "{match.group(1)}" not found')
            return
        printer.start(path)
        _say(duet, f"File {match.group(1)} selected for printing")
    elif command == "M25":
        if printer.phase is Phase.PAUSED:
            _say(duet, "Error: M25: Printing is already paused!")
        elif printer.phase is not Phase.PRINTING:
            _say(duet, "Error: M25: Cannot pause print, because no file is being printed!")
        else:
            printer.pause()
    elif command == "M24":
        if printer.phase is Phase.PAUSED:
            printer.resume()
        elif printer.phase is not Phase.PRINTING:
            _say(duet, "Error: M24: Cannot print, because no file is selected!")
    elif command in ("M0", "M1", "M2"):
        if printer.phase is Phase.PAUSED:
            printer.stop()
        elif printer.phase is Phase.PRINTING:
            _say(duet, f"Error: {command}: Pause the print before attempting to cancel it")
    elif command == "M112":
        printer.disconnect()
        duet.halted = True
    elif command == "M999":
        printer.connect()
        duet.halted = False


async def rr_reply(request: Request, printer: Printer) -> Response:
    """GET /rr_reply: the replies since the last read (text)."""
    duet = _duet(request, printer)
    text, duet.reply = "\n".join(duet.reply), []
    return PlainTextResponse(text)


async def rr_upload(request: Request, printer: Printer) -> Response:
    """POST /rr_upload?name=: the raw body is the file; it overwrites (`{"err": 0}`)."""
    name = request.query_params.get("name", "")
    if not name:
        return JSONResponse({"err": 1})
    path = _path_of(name)
    data = await request.body()
    if printer.printing_file(path):  # the firmware cannot replace an open file
        return JSONResponse({"err": 0})
    try:
        printer.store(path, data)
    except PrinterError:
        return JSONResponse({"err": 1})
    return JSONResponse({"err": 0})


async def rr_delete(request: Request, printer: Printer) -> Response:
    """GET /rr_delete?name=: `{"err": 1}` for a missing file or one that is open."""
    path = _path_of(request.query_params.get("name", ""))
    try:
        printer.delete(path)
    except PrinterError:
        return JSONResponse({"err": 1})
    return JSONResponse({"err": 0})


async def rr_disconnect(request: Request, printer: Printer) -> Response:
    """GET /rr_disconnect."""
    sessions = _duet(request, printer).sessions
    gone = sessions.pop(_session_id(request), None)
    return JSONResponse({"err": 0 if gone is not None else 1})


# -- sessions -------------------------------------------------------------------------------


def _session_id(request: Request) -> tuple[str, int]:
    host = request.client.host if request.client else ""
    key = request.headers.get("x-session-key", "0")
    return host, int(key) if key.isdigit() else -1


def _no_password(api_key: str) -> bool:
    return api_key in ("", "reprap")


def create_app(printers: Mapping[int, Printer], api_key: str) -> Starlette:
    """Build the app serving `printers` (keyed by local port) with RRF's rr_ API; `api_key`
    is the machine password."""

    async def connect(request: Request) -> Response:
        printer = printer_for(request)
        duet = _duet(request, printer)
        if "password" not in request.query_params:
            return PlainTextResponse("Not authorized", status_code=401)
        given = request.query_params["password"]
        if not _no_password(api_key) and not secrets.compare_digest(
                given.encode(), api_key.encode()):
            return JSONResponse({"err": 1})
        if len(duet.sessions) >= MAX_SESSIONS:
            return JSONResponse({"err": 2})
        key = secrets.randbits(31) + 1 if request.query_params.get("sessionKey") == "yes" \
            else 0
        host = request.client.host if request.client else ""
        duet.sessions[(host, key)] = 0.0
        return JSONResponse({"err": 0, "sessionTimeout": SESSION_TIMEOUT_MS,
                             "boardType": BOARD, "apiLevel": 2, "sessionKey": key})

    def guarded(handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            printer = printer_for(request)
            sessions = _duet(request, printer).sessions
            if _session_id(request) not in sessions:
                if request.method == "GET" and _no_password(api_key):
                    sessions[_session_id(request)] = 0.0  # no password: any GET signs in
                else:
                    return PlainTextResponse("Not authorized", status_code=401)
            return await serve(request, handler, _error)

        return endpoint

    def route(path: str, handler: Handler, *methods: str) -> Route:
        return Route(path, guarded(handler), methods=list(methods))

    routes = [
        Route("/emulator/status", emulator_status, methods=["GET"]),
        Route("/rr_connect", connect, methods=["GET"]),
        route("/rr_disconnect", rr_disconnect, "GET"),
        route("/rr_model", rr_model, "GET"),
        route("/rr_gcode", rr_gcode, "GET"),
        route("/rr_reply", rr_reply, "GET"),
        route("/rr_upload", rr_upload, "POST"),
        route("/rr_delete", rr_delete, "GET"),
    ]

    app = emulator_app(routes, printers, _error)
    app.state.duet = {}
    return app


def _error(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


async def emulator_status(request: Request) -> Response:
    """GET /emulator/status (no session): state, start counters and current file."""
    printer = printer_for(request)
    return JSONResponse({"api": "Duet", "state": str(printer.phase), **printer.summary()})
