"""Which emulated printer a request is for: the one listening on the connection's port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from mes.emulator.printer import Printer, PrinterError

Handler = Callable[[Request, Printer], Awaitable[Response]]


def printer_for(request: Request) -> Printer:
    """The printer serving the local port of this request, or 404."""
    printers: Mapping[int, Printer] = request.app.state.printers
    server = request.scope.get("server")
    printer = printers.get(server[1]) if server else None
    if printer is None:
        raise HTTPException(404, "No emulated printer on this port")
    return printer


async def serve(request: Request, handler: Handler,
                error: Callable[[int, str], Response]) -> Response:
    """Run `handler` for this request's printer; a PrinterError becomes `error(status, text)`."""
    printer = printer_for(request)
    try:
        return await handler(request, printer)
    except PrinterError as exc:
        return error(exc.status, exc.message)
