"""The few MQTT 3.1.1 packets a Bambu Lab printer and its clients exchange, encoded and
decoded (OASIS MQTT 3.1.1, section 2 and 3): CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH at
QoS 0, PINGREQ/PINGRESP and DISCONNECT.

Our own codec because the client must check the printer's TLS certificate against the one
pinned for it before it sends the printer's access code in CONNECT, which the MQTT client
libraries (paho, aiomqtt) do not allow. A packet's length is bounded before its body is
read: a hostile peer cannot make us allocate more than `limit` bytes.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, SUBSCRIBE, SUBACK = 1, 2, 3, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
PROTOCOL = b"MQTT"
LEVEL = 4  # 3.1.1
DEFAULT_LIMIT = 1 << 20  # a Bambu report is a few KiB; nothing needs a MiB
ACCEPTED, BAD_CREDENTIALS, NOT_AUTHORIZED = 0, 4, 5


class MqttError(Exception):
    """A malformed or oversized packet, or one the protocol does not allow here."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet: its type, the flags of its first byte, and its body."""

    kind: int
    flags: int
    body: bytes


def _length(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def packet(kind: int, body: bytes = b"", flags: int = 0) -> bytes:
    """A whole packet of `kind` with `body`."""
    return bytes([(kind << 4) | flags]) + _length(len(body)) + body


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise MqttError("a string longer than 65,535 bytes")
    return struct.pack("!H", len(data)) + data


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body, self.at = body, 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.body):
            raise MqttError("a packet shorter than its fields")
        chunk = self.body[self.at:self.at + count]
        self.at += count
        return chunk

    def short(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def text(self) -> bytes:
        return self.take(self.short())

    def rest(self) -> bytes:
        chunk, self.at = self.body[self.at:], len(self.body)
        return chunk


async def read_packet(reader: asyncio.StreamReader, limit: int = DEFAULT_LIMIT) -> Packet:
    """The next packet; MqttError when its length exceeds `limit` or is malformed,
    asyncio.IncompleteReadError when the stream ends."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise MqttError("a remaining length of more than four bytes")
    if length > limit:
        raise MqttError(f"a packet of {length} bytes (at most {limit})")
    return Packet(first >> 4, first & 0x0F, await reader.readexactly(length))


def connect(client_id: str, username: str, password: str, keepalive: int = 60) -> bytes:
    """CONNECT with a clean session, a user name and a password."""
    flags = 0x80 | 0x40 | 0x02
    body = (_text(PROTOCOL) + bytes([LEVEL, flags]) + struct.pack("!H", keepalive)
            + _text(client_id) + _text(username) + _text(password))
    return packet(CONNECT, body)


@dataclass(frozen=True, slots=True)
class Connect:
    """What a CONNECT asked for."""

    client_id: str
    username: str | None
    password: str | None
    keepalive: int


def parse_connect(body: bytes) -> Connect:
    """A CONNECT's fields (will messages are read past); MqttError if malformed."""
    read = _Reader(body)
    if read.text() != PROTOCOL or read.take(1)[0] != LEVEL:
        raise MqttError("not MQTT 3.1.1")
    flags = read.take(1)[0]
    keepalive = read.short()
    client_id = read.text().decode(errors="replace")
    if flags & 0x04:  # a will: its topic and message
        read.text()
        read.text()
    username = read.text().decode(errors="replace") if flags & 0x80 else None
    password = read.text().decode(errors="replace") if flags & 0x40 else None
    return Connect(client_id, username, password, keepalive)


def connack(code: int = ACCEPTED) -> bytes:
    """CONNACK with `code` (0 accepted, 4 bad user name or password, 5 not authorised)."""
    return packet(CONNACK, bytes([0, code]))


def parse_connack(body: bytes) -> int:
    """The return code of a CONNACK."""
    if len(body) != 2:
        raise MqttError("a CONNACK of the wrong length")
    return body[1]


def subscribe(packet_id: int, topic: str) -> bytes:
    """SUBSCRIBE to one topic at QoS 0."""
    return packet(SUBSCRIBE, struct.pack("!H", packet_id) + _text(topic) + b"\x00", flags=2)


def parse_subscribe(body: bytes) -> tuple[int, list[str]]:
    """A SUBSCRIBE's packet id and topic filters."""
    read = _Reader(body)
    packet_id = read.short()
    topics = []
    while read.at < len(body):
        topics.append(read.text().decode(errors="replace"))
        read.take(1)
    if not topics:
        raise MqttError("a SUBSCRIBE without a topic")
    return packet_id, topics


def suback(packet_id: int, count: int) -> bytes:
    """SUBACK granting QoS 0 to `count` filters."""
    return packet(SUBACK, struct.pack("!H", packet_id) + bytes(count))


def publish(topic: str, payload: bytes) -> bytes:
    """PUBLISH at QoS 0."""
    return packet(PUBLISH, _text(topic) + payload)


def parse_publish(flags: int, body: bytes) -> tuple[str, bytes]:
    """A PUBLISH's topic and payload (a packet id at QoS 1 or 2 is read past)."""
    read = _Reader(body)
    topic = read.text().decode(errors="replace")
    if (flags >> 1) & 0x03:
        read.short()
    return topic, read.rest()


PING = packet(PINGREQ)
PONG = packet(PINGRESP)
BYE = packet(DISCONNECT)
