"""The MQTT 3.1.1 codec the Bambu Lab printers need: packets survive a round trip, and a
hostile peer's lengths are refused before anything is read or allocated."""

from __future__ import annotations

import asyncio

import pytest

from mes import mqtt_wire as wire


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_connect_subscribe_publish_round_trip() -> None:
    stream = (wire.connect("mes-1", "bblp", "12345678", keepalive=30)
              + wire.subscribe(7, "device/SN1/report")
              + wire.publish("device/SN1/request", b'{"pushing":{"command":"pushall"}}')
              + wire.PING + wire.BYE)
    reader = _reader(stream)
    first = await wire.read_packet(reader)
    assert first.kind == wire.CONNECT
    hello = wire.parse_connect(first.body)
    assert (hello.client_id, hello.username, hello.password, hello.keepalive) == \
        ("mes-1", "bblp", "12345678", 30)
    second = await wire.read_packet(reader)
    assert (second.kind, second.flags) == (wire.SUBSCRIBE, 2)
    assert wire.parse_subscribe(second.body) == (7, ["device/SN1/report"])
    third = await wire.read_packet(reader)
    assert wire.parse_publish(third.flags, third.body) == (
        "device/SN1/request", b'{"pushing":{"command":"pushall"}}')
    assert [(await wire.read_packet(reader)).kind for _ in range(2)] == \
        [wire.PINGREQ, wire.DISCONNECT]
    with pytest.raises(asyncio.IncompleteReadError):
        await wire.read_packet(reader)


async def test_a_big_payload_uses_a_multi_byte_length() -> None:
    payload = b"x" * 300_000
    data = wire.publish("t", payload)
    assert data[1] & 0x80 and data[2] & 0x80  # three length bytes
    packet = await wire.read_packet(_reader(data))
    assert wire.parse_publish(packet.flags, packet.body) == ("t", payload)


async def test_a_length_over_the_limit_is_refused_before_its_body_is_read() -> None:
    # PUBLISH claiming 268,435,455 bytes (the most four length bytes can say); nothing more
    # arrives: the codec must refuse at once instead of waiting for (or allocating) them.
    reader = _reader(bytes([0x30, 0xFF, 0xFF, 0xFF, 0x7F]), eof=False)
    with pytest.raises(wire.MqttError, match="268435455 bytes"):
        await asyncio.wait_for(wire.read_packet(reader, limit=64 * 1024), 5)


async def test_a_fifth_length_byte_is_malformed() -> None:
    with pytest.raises(wire.MqttError, match="more than four bytes"):
        await wire.read_packet(_reader(bytes([0x30, 0x80, 0x80, 0x80, 0x80, 0x01])))


@pytest.mark.parametrize("body", [b"", b"\x00\x04MQTT", b"\x00\x04MQIsdp\x03\x02\x00\x3c",
                                  b"\x00\x04MQTT\x04\xc2\x00\x3c\x00\x05ab"])
def test_malformed_connects_are_refused(body: bytes) -> None:
    with pytest.raises(wire.MqttError):
        wire.parse_connect(body)


def test_connack_and_suback() -> None:
    assert wire.connack(wire.BAD_CREDENTIALS) == b"\x20\x02\x00\x04"
    assert wire.parse_connack(b"\x00\x00") == wire.ACCEPTED
    assert wire.suback(7, 1) == b"\x90\x03\x00\x07\x00"
    with pytest.raises(wire.MqttError):
        wire.parse_subscribe(b"\x00\x07")
