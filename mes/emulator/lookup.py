"""Which emulated printer a request is for: the one listening on the connection's port."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request

from mes.emulator.printer import Printer


def printer_for(request: Request) -> Printer:
    """The printer serving the local port of this request, or 404."""
    printers: Mapping[int, Printer] = request.app.state.printers
    server = request.scope.get("server")
    printer = printers.get(server[1]) if server else None
    if printer is None:
        raise HTTPException(404, "No emulated printer on this port")
    return printer
