"""Console scripts: `server` starts a node, `setting` prints the effective configuration.

Both answer `--help` and `--version` without starting anything. A node that cannot bind one
of its ports stops at once with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from mes.config import ConfigError, Settings, load_settings, masked_items
from mes.logs import configure_logging
from mes.version import package_version

EXIT_BAD_CONFIG = 2
EXIT_CANNOT_START = 1
CONFIGURATION_HELP = ("Configuration comes from the environment or a .env file in the working "
                      "directory (see .env.example); `setting` prints the effective values.")


def parse_command_line(prog: str, description: str, argv: Sequence[str] | None) -> None:
    """Answer --help and --version (and refuse unknown arguments) before anything starts."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=CONFIGURATION_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.parse_args(argv)


def _fail(message: str, status: int = EXIT_BAD_CONFIG) -> SystemExit:
    print(f"mes: {message}", file=sys.stderr)
    return SystemExit(status)


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise _fail(f"invalid configuration: {exc}") from None


def setting(argv: Sequence[str] | None = None) -> None:
    """Print NAME=value for every setting, secrets masked."""
    parse_command_line("setting", "Print the effective configuration, secrets masked.", argv)
    for name, value in masked_items(_settings_or_exit()):
        print(f"{name}={value}")


def bind_http(host: str, port: int) -> socket.socket:
    """The REST listener's socket, bound before anything else starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _fail(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def ending_streams(server_class: type[Any], node: Any) -> type[Any]:
    """A uvicorn Server class that ends the node's event streams as soon as it is asked to
    stop (uvicorn waits for open connections before the app's shutdown would end them)."""

    class Server(server_class):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            node.events.close()
            super().handle_exit(sig, frame)

    return Server


def _exit_cleanly_on_signals() -> None:
    """After its graceful shutdown uvicorn raises the signal that stopped it again, with the
    handlers it found: make those end the process through SystemExit(0), so that the node
    is closed (Raft stopped, scratch database removed) instead of killed by the signal."""

    def stop(sig: int, frame: Any) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def server(argv: Sequence[str] | None = None) -> None:
    """Run one node: Raft, state machine and REST API until SIGINT or SIGTERM."""
    parse_command_line("server", "Run one mes node: Raft-replicated farm state, printer "
                       "workers and the REST API at /api/v1.", argv)
    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format, settings.http_access_log)
    import uvicorn

    from mes.api.app import create_app
    from mes.interpreter import tune_for_node
    from mes.node import FarmNode
    from mes.private_dirs import private_files
    from mes.raft.node import RaftBindError
    from mes.state.errors import NewerData
    from mes.version import EXIT_NEWER_DATA

    tune_for_node()
    private_files()
    http_socket = bind_http(settings.http_host, settings.http_port)
    try:
        node = FarmNode(settings)
    except RaftBindError as exc:
        raise _fail(str(exc)) from None
    except NewerData as exc:
        raise _fail(str(exc), EXIT_NEWER_DATA) from None
    except Exception as exc:  # the data dir is unusable, ...
        raise _fail(f"cannot start node: {exc}", EXIT_CANNOT_START) from None
    _exit_cleanly_on_signals()
    try:
        config = uvicorn.Config(create_app(node), log_config=None,
                                log_level=settings.log_level.lower(),
                                access_log=settings.http_access_log)
        ending_streams(uvicorn.Server, node)(config).run(sockets=[http_socket])
    finally:
        node.close()
