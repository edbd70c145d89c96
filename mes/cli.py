"""Console scripts: `server` starts a node, `setting` prints the effective configuration.

Both answer `--help` and `--version` without starting anything. A node that cannot bind one
of its ports, or whose TLS certificate and key cannot be used, stops at once with one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mes.config import ConfigError, Settings, load_settings, masked_items
from mes.logs import configure_logging
from mes.version import package_version

log = logging.getLogger(__name__)

EXIT_BAD_CONFIG = 2
EXIT_CANNOT_START = 1
OPCUA_DEFAULT_PORT = 4840
CONFIGURATION_HELP = ("Configuration comes from the environment or a .env file in the working "
                      "directory (see .env.example); `setting` prints the effective values.")


def parse_command_line(prog: str, description: str, argv: Sequence[str] | None) -> None:
    """Answer --help and --version (and refuse unknown arguments) before anything starts."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=CONFIGURATION_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.parse_args(argv)


def fail(message: str, status: int = EXIT_BAD_CONFIG) -> SystemExit:
    """One line on stderr, and the SystemExit to raise with `status`."""
    print(f"mes: {message}", file=sys.stderr)
    return SystemExit(status)


def settings_or_exit() -> Settings:
    """The settings, or exit status 2 with one line saying what is wrong."""
    try:
        return load_settings()
    except ConfigError as exc:
        raise fail(f"invalid configuration: {exc}") from None


def setting(argv: Sequence[str] | None = None) -> None:
    """Print NAME=value for every setting, secrets masked."""
    parse_command_line("setting", "Print the effective configuration, secrets masked.", argv)
    for name, value in masked_items(settings_or_exit()):
        print(f"{name}={value}")


def _tls_file(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise fail(f"invalid configuration: {name}: cannot read {path} ({exc.strerror})") \
            from None


def check_tls(cert_file: str, key_file: str) -> None:
    """Stop with one line unless TLS_CERT_FILE holds PEM certificates, TLS_KEY_FILE an
    unencrypted PEM private key, and that key is the first certificate's (uvicorn would
    otherwise fail only after the node started, or prompt for a key's password)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    try:
        cert = x509.load_pem_x509_certificates(_tls_file(cert_file, "TLS_CERT_FILE"))[0]
    except ValueError:
        raise fail(f"invalid configuration: TLS_CERT_FILE: {cert_file} holds no PEM "
                    "certificate") from None
    try:
        key = load_pem_private_key(_tls_file(key_file, "TLS_KEY_FILE"), password=None)
    except TypeError:
        raise fail(f"invalid configuration: TLS_KEY_FILE: {key_file} is encrypted; give "
                    "the key without a password (readable by this user only)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise fail(f"invalid configuration: TLS_KEY_FILE: {key_file} holds no usable PEM "
                    "private key") from None
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise fail(f"invalid configuration: TLS_KEY_FILE: {key_file} is not the key of the "
                    f"certificate in TLS_CERT_FILE ({cert.subject.rfc4514_string() or cert_file})")
    try:  # what uvicorn will do with them
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise fail(f"invalid configuration: TLS_CERT_FILE, TLS_KEY_FILE: not usable for "
                    f"TLS: {exc}") from None


def bind_http(host: str, port: int) -> socket.socket:
    """The REST listener's socket, bound before anything else starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise fail(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def check_opcua_port(endpoint: str) -> None:
    """Stop with one line when the embedded OPC UA server's port is taken. The server binds
    on its own thread a moment later (asyncio's SO_REUSEADDR, as here); a node that started
    without its OPC UA listener would otherwise run on, quietly serving no OPC UA."""
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or OPCUA_DEFAULT_PORT
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise fail(f"cannot listen for OPC UA on {host}:{port} (OPCUA_ENDPOINT): "
                   f"{exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:
            continue  # a family this machine lacks (no IPv6): asyncio skips it too
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    continue  # as asyncio's create_server does (bpo-30945)
                raise fail(f"cannot listen for OPC UA on {host or '*'}:{port} "
                           f"(OPCUA_ENDPOINT): {exc.strerror}; give each node its own "
                           "port") from None


def ending_streams(server_class: type[Any], node: Any) -> type[Any]:
    """A uvicorn Server class that ends the node's event streams as soon as it is asked to
    stop (uvicorn waits for open connections before the app's shutdown would end them)."""

    class Server(server_class):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            node.events.close()
            super().handle_exit(sig, frame)

    return Server


# How long a closing TLS connection may wait for the client's close_notify during shutdown.
TLS_CLOSE_GRACE = 1.0


def closing_tls_promptly(server_class: type[Any]) -> type[Any]:
    """A uvicorn Server class whose shutdown does not wait for idle TLS connections.

    uvicorn closes an idle keep-alive connection at shutdown; over TLS that sends
    close_notify and waits (30 s) for the client's, which an idle browser or pooled client
    never sends, so a stop took half a minute. Connections still closing after
    TLS_CLOSE_GRACE with nothing left to send are aborted; requests still running, and
    answers still being sent, are not touched."""

    class Server(server_class):  # type: ignore[misc]
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if not self.config.is_ssl:
                await super().shutdown(sockets)
                return
            reaper = asyncio.create_task(self._abort_closing())
            try:
                await super().shutdown(sockets)
            finally:
                reaper.cancel()

        async def _abort_closing(self) -> None:
            await asyncio.sleep(TLS_CLOSE_GRACE)
            while True:
                for connection in list(self.server_state.connections):
                    transport = getattr(connection, "transport", None)
                    if transport is not None and transport.is_closing() \
                            and not transport.get_write_buffer_size():
                        transport.abort()
                await asyncio.sleep(0.1)

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
    settings = settings_or_exit()
    if settings.tls_enabled:
        check_tls(settings.tls_cert_file, settings.tls_key_file)
    configure_logging(settings.log_level, settings.log_format, settings.http_access_log)
    for line in settings.deprecations():
        log.warning("%s", line)
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
    if settings.opcua.mode == "embedded":
        check_opcua_port(settings.opcua.endpoint)
    try:
        node = FarmNode(settings)
    except RaftBindError as exc:
        raise fail(str(exc)) from None
    except NewerData as exc:
        raise fail(str(exc), EXIT_NEWER_DATA) from None
    except Exception as exc:  # the data dir is unusable, ...
        raise fail(f"cannot start node: {exc}", EXIT_CANNOT_START) from None
    _exit_cleanly_on_signals()
    try:
        # uvicorn's defaults otherwise: proxy_headers on, trusted from FORWARDED_ALLOW_IPS
        # (default 127.0.0.1 and ::1), see docs/configuration.md, "HTTPS and reverse proxies".
        config = uvicorn.Config(create_app(node), log_config=None,
                                log_level=settings.log_level.lower(),
                                access_log=settings.http_access_log,
                                ssl_certfile=settings.tls_cert_file or None,
                                ssl_keyfile=settings.tls_key_file or None)
        server_class = closing_tls_promptly(ending_streams(uvicorn.Server, node))
        server_class(config).run(sockets=[http_socket])
    finally:
        node.close()
