"""Which emulated printer a request is for: the one listening on the connection's port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

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
    """Run `handler` for this request's printer; a PrinterError becomes `error(status, text)`.

    Every request but a read is recorded with its client (User-Agent) and time, and every
    start with the client that made it: tests tell which node acted on the printer."""
    printer = printer_for(request)
    client = request.headers.get("user-agent", "")
    starts = printer.total_starts
    if request.method not in ("GET", "HEAD"):
        printer.record_request(client, request.method, request.url.path)
    else:
        printer.reads_by[client] += 1
    try:
        return await handler(request, printer)
    except PrinterError as exc:
        return error(exc.status, exc.message)
    finally:
        if printer.total_starts > starts and printer.job is not None:
            printer.record_start(client, printer.job.path)


def emulator_app(routes: Sequence[BaseRoute], printers: Mapping[int, Printer],
                 error: Callable[[int, str], Response]) -> Starlette:
    """The app of one API serving `printers` (keyed by local port) on `routes`; Starlette's
    own HTTP errors (no route, wrong method) answer in the API's shape, through `error`."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, exc.detail)

    app = Starlette(routes=list(routes), exception_handlers={HTTPException: http_error})
    app.state.printers = printers
    return app
