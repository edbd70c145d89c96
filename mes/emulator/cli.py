"""``mock-printer``: serve N independent emulated printers on consecutive ports.

All printers share one process, one asyncio loop and one uvicorn server listening on N
sockets (one uvicorn server per port would run N housekeeping tickers). The app picks the
printer by the local port of each connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette

from mes.emulator import duet_api, moonraker_api, octoprint_api, prusalink_api
from mes.emulator.printer import Printer
from mes.version import package_version

APIS: dict[str, Callable[[dict[int, Printer], str], Starlette]] = {
    "OctoPrint": octoprint_api.create_app,
    "PrusaLink": prusalink_api.create_app,
    "Moonraker": moonraker_api.create_app,
    "Duet": duet_api.create_app,
}


def _api_name(value: str) -> str:
    for name in APIS:
        if name.lower() == value.lower():
            return name
    raise argparse.ArgumentTypeError(f"unknown API {value!r}; choose from {', '.join(APIS)}")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {value}")
        return number

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="mock-printer",
        description="Serve emulated OctoPrint, PrusaLink, Moonraker or Duet printers on ports "
        "P..P+N-1.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--api", type=_api_name, required=True,
                        help="OctoPrint, PrusaLink, Moonraker or Duet")
    parser.add_argument("--port", type=int, required=True, help="first port")
    parser.add_argument("--count", type=_positive(int), default=1, help="number of printers")
    parser.add_argument(
        "--job-time", type=_positive(float), default=10.0, help="seconds every print takes"
    )
    parser.add_argument(
        "--heat-time", type=float, default=0.0,
        help="seconds every print heats before the printer moves (before the job time)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--api-key", default="mockkey", help="API key (and Digest password)")
    args = parser.parse_args(argv)
    if args.heat_time < 0:
        parser.error("--heat-time must not be negative")
    if args.port <= 0 or args.port + args.count - 1 > 65535:
        parser.error("ports must lie in 1..65535")
    return args


def raise_fd_limit(needed: int) -> None:
    """Raise the soft open-file limit towards ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """Bind ``count`` TCP sockets on ports ``port``..``port+count-1``; close all on failure."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for p in range(port, port + count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, p))
            sock.set_inheritable(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.on_started()


async def serve(
    app: Starlette, sockets: list[socket.socket], on_started: Callable[[], None]
) -> None:
    """Serve ``app`` on ``sockets`` until SIGINT or SIGTERM (a second SIGINT forces exit)."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        http="httptools",
        ws="none",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(config, on_started)

    def stop(sig: signal.Signals) -> None:
        if server.should_exit and sig is signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    await server.serve(sockets=sockets)


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``mock-printer``."""
    began = time.perf_counter()
    args = parse_args(argv)
    raise_fd_limit(args.count + 256)
    try:
        sockets = bind_sockets(args.host, args.port, args.count)
    except OSError as exc:
        sys.exit(f"mock-printer: cannot listen on {args.host}:{args.port}..: {exc}")
    ports = range(args.port, args.port + args.count)
    printers = {port: Printer(port, args.job_time, heat_time=args.heat_time) for port in ports}
    app = APIS[args.api](printers, args.api_key)

    def started() -> None:
        print(
            f"mock-printer: {args.count} {args.api} printer(s) on http://{args.host}:"
            f"{ports[0]}..{ports[-1]}, job time {args.job_time:g} s, "
            f"ready in {time.perf_counter() - began:.2f} s",
            flush=True,
        )

    _run(serve(app, sockets, started))


if __name__ == "__main__":
    main()
