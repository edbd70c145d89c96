"""The Raft port, hardened against anyone who can reach it (pysyncobj 0.3.17, pinned).

pysyncobj buffered whatever a connection sent (`bytes +=`, quadratic on the Raft thread),
believed any frame length (a 2 GiB header made it buffer 64 MiB of junk), and kept a
connection that never authenticated for the whole `connectionTimeout` (10 days here). So:

- frames are read into a bytearray and their length is checked from their first 4 bytes,
  before anything more is buffered: at most UNPROVEN_FRAME until the connection proved the
  key (a frame decrypted), PROVEN_FRAME after; decompression is capped the same way;
- an incoming connection that has not proven the key within UNPROVEN_SECONDS is closed,
  and each source address keeps at most UNPROVEN_PER_SOURCE of them (the oldest is closed
  for a new one, so a peer's reconnect is never locked out by a flood from its address);
- the long timeout applies only to connections that proved the key;
- the listening socket accepts a batch of connections per event with a larger backlog, and
  an accept error of one connection (out of descriptors) no longer unbinds the Raft port.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import time
import zlib
from typing import Any

import pysyncobj.pickle
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

log = logging.getLogger(__name__)

UNPROVEN_FRAME = 1 << 20
PROVEN_FRAME = 64 << 20
UNPROVEN_SECONDS = 5.0
UNPROVEN_PER_SOURCE = 16
_HEADER = struct.Struct("i")


def _proven(conn: Any) -> bool:
    return bool(getattr(conn, "mes_proven", False))


def _limit(conn: Any) -> int:
    return PROVEN_FRAME if _proven(conn) else UNPROVEN_FRAME


def _buffer(conn: Any) -> bytearray:
    buf = conn._TcpConnection__readBuffer
    if not isinstance(buf, bytearray):
        buf = bytearray(buf)
        conn._TcpConnection__readBuffer = buf
    return buf


def _frame_too_long(conn: Any, buf: bytearray) -> bool:
    if len(buf) < _HEADER.size:
        return False
    (length,) = _HEADER.unpack_from(buf, 0)
    if 0 <= length <= _limit(conn):
        return False
    log.warning("closed a Raft connection announcing a frame of %d bytes (limit %d, %s)",
                length, _limit(conn), "proven" if _proven(conn) else "not authenticated")
    conn.disconnect()
    return True


def _process_read(self: Any) -> bool:
    """pysyncobj's read step, into a bytearray, closing at once on an oversized frame."""
    sock = self._TcpConnection__socket
    try:
        incoming = sock.recv(self._TcpConnection__recvBufferSize)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            self.disconnect()
        return False
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        self.disconnect()
        return False
    if not incoming:
        self.disconnect()
        return False
    buf = _buffer(self)
    buf += incoming
    return not _frame_too_long(self, buf)


def _decompress(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise ValueError("a frame inflates beyond the limit")
    return out


def _process_parse_message(self: Any) -> Any:
    """pysyncobj's frame parser (decrypt, then unpickle), with the length checked first and
    the buffer consumed in place; the connection counts as proven once a frame decrypted."""
    buf = _buffer(self)
    if len(buf) < _HEADER.size or _frame_too_long(self, buf):
        return None
    (length,) = _HEADER.unpack_from(buf, 0)
    if len(buf) - _HEADER.size < length:
        return None
    data = bytes(buf[_HEADER.size:_HEADER.size + length])
    try:
        if self.encryptor:
            stamp = self.encryptor.extract_timestamp(data)
            if stamp < self.recvLastTimestamp:
                raise ValueError("a replayed frame")
            self.recvLastTimestamp = stamp
            data = self.encryptor.decrypt(data)
            self.mes_proven = True
        message = pysyncobj.pickle.loads(_decompress(data, _limit(self)))
        if self.recvRandKey:
            rand_key, message = message
            if rand_key != self.recvRandKey:
                raise ValueError("a frame of another connection")
    except Exception:
        self.disconnect()
        return None
    del buf[:_HEADER.size + length]
    return message


# How many connections one readiness event of the listening socket accepts (pysyncobj took
# one per tick, and a tick syncs the journal: a flood of connects queued behind its backlog
# of 5, and so did a peer's reconnect). LISTEN_BACKLOG replaces that backlog.
ACCEPT_BATCH = 64
LISTEN_BACKLOG = 128
# accept() errors that say nothing about the listening socket: pysyncobj unbound the Raft
# port on any error but EAGAIN, so running out of descriptors once closed it for good.
_TRANSIENT_ACCEPT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                               errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})


_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
# Seconds between two warnings of a refused accept (a flood would log one per poll).
ACCEPT_WARNING_INTERVAL = 10.0


class _Reserve:
    """One descriptor held back for shedding: out of descriptors, a pending connection stays
    in the backlog and the level-triggered poller reports it again at once, for ever. Closing
    the reserve lets one accept() take it off the backlog, to be closed at once."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.last_warning = 0.0
        self.shed = 0

    def hold(self) -> None:
        if self.fd is None:
            with contextlib.suppress(OSError):
                self.fd = os.open(os.devnull, os.O_RDONLY)

    def shed_one(self, listener: socket.socket) -> bool:
        """Accept and close one pending connection with the reserve's descriptor."""
        if self.fd is None:
            return False
        os.close(self.fd)
        self.fd = None
        try:
            sock, _addr = listener.accept()
        except OSError:
            self.hold()
            return False
        sock.close()
        self.shed += 1
        self.hold()
        return True

    def warn(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self.last_warning >= ACCEPT_WARNING_INTERVAL:
            self.last_warning = now
            log.warning("the Raft port could not accept a connection: %s (%d shed so far)",
                        exc, self.shed)


_RESERVE = _Reserve()


def _on_new_connection(self: Any, descr: Any, event: int) -> None:
    """pysyncobj's accept step, draining up to ACCEPT_BATCH connections, never unbinding the
    port for an error of one connection."""
    if event & POLL_EVENT_TYPE.READ:
        listener = self._TcpServer__socket
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                if exc.errno in _TRANSIENT_ACCEPT:
                    _RESERVE.warn(exc)
                    if exc.errno in _OUT_OF_DESCRIPTORS:
                        _RESERVE.shed_one(listener)  # or the poller spins on it
                    break
                self.unbind()
                return
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                self._TcpServer__sendBufferSize)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                self._TcpServer__recvBufferSize)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                conn = TcpConnection(
                    poller=self._TcpServer__poller, socket=sock,
                    timeout=self._TcpServer__connectionTimeout,
                    sendBufferSize=self._TcpServer__sendBufferSize,
                    recvBufferSize=self._TcpServer__recvBufferSize,
                    keepalive=self._TcpServer__keepalive)
            except OSError:
                sock.close()  # the client went away in between
                continue
            self._TcpServer__onNewConnectionCallback(conn)
    if event & POLL_EVENT_TYPE.ERROR:
        self.unbind()


_PATCHED = {
    (TcpConnection, "_TcpConnection__processRead"): _process_read,
    (TcpConnection, "_TcpConnection__processParseMessage"): _process_parse_message,
    (TcpServer, "_TcpServer__onNewConnection"): _on_new_connection,
}
_ORIGINAL = {(cls, name): getattr(cls, name) for cls, name in _PATCHED}


def install() -> None:
    """Replace pysyncobj's accept, read and parse steps (for every node of this process)."""
    _RESERVE.hold()
    for (cls, name), replacement in _PATCHED.items():
        setattr(cls, name, replacement)


def originals() -> dict[tuple[type, str], Any]:
    """pysyncobj's own accept, read and parse steps (their source is pinned by a test)."""
    return dict(_ORIGINAL)


class GuardedTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport with a deadline and a per-source cap for connections that
    have not proven the key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unproven_since: dict[Any, float] = {}
        self._backlog_raised = False
        self.refused_unproven = 0
        super().__init__(*args, **kwargs)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        source = _source(conn)
        same = [c for c in self._unknownConnections if _source(c) == source]
        if len(same) >= UNPROVEN_PER_SOURCE:
            oldest = min(same, key=lambda c: self._unproven_since.get(c, 0.0))
            self.refused_unproven += 1
            self._drop(oldest)
        self._unproven_since[conn] = time.monotonic()
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        super()._onIncomingMessageReceived(conn, message)
        if conn not in self._unknownConnections:
            self._unproven_since.pop(conn, None)  # a node or a read-only client: known now

    def _onDisconnected(self, conn: Any) -> None:
        self._unproven_since.pop(conn, None)
        conn.mes_proven = False  # an outgoing connection is reused: prove the key again
        super()._onDisconnected(conn)

    def _onTick(self) -> None:
        super()._onTick()
        if self._ready and not self._backlog_raised and self._server is not None:
            listener = self._server._TcpServer__socket
            if listener is not None:
                listener.listen(LISTEN_BACKLOG)
                self._backlog_raised = True
        if self._unproven_since:
            deadline = time.monotonic() - UNPROVEN_SECONDS
            for conn, since in list(self._unproven_since.items()):
                if since < deadline:
                    self.refused_unproven += 1
                    self._drop(conn)

    def _drop(self, conn: Any) -> None:
        self._unproven_since.pop(conn, None)
        self._unknownConnections.discard(conn)
        conn.disconnect()


def _source(conn: Any) -> str | None:
    sock = conn._TcpConnection__socket
    try:
        return str(sock.getpeername()[0]) if sock is not None else None
    except OSError:
        return None
