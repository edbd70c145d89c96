"""PRINTER_NETWORKS: the address ranges printers may be at, checked when a URL is given and
again on every new connection (a name may resolve elsewhere later)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import httpcore
import httpx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = tuple[Network, ...]
# How long one name lookup may take, at the REST edge and before a connection.
RESOLVE_TIMEOUT = 5.0
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class AddressRefused(Exception):
    """A printer's host may not be connected to; the message is ours, one short line."""


class NetworkRefused(AddressRefused):
    """The host resolves to an address outside PRINTER_NETWORKS."""

    def __init__(self, address: str) -> None:
        super().__init__(f"address {address} is outside PRINTER_NETWORKS")
        self.address = address


class HostUnresolved(AddressRefused):
    """The host name does not resolve (in time)."""

    def __init__(self) -> None:
        super().__init__("host name does not resolve")


@lru_cache(maxsize=16)
def parse_networks(text: str) -> Networks:
    """The networks of a comma-separated CIDR list (empty: any address); ValueError if bad."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part))
        except ValueError as exc:
            raise ValueError(f"PRINTER_NETWORKS: {part!r} is not a CIDR network ({exc})") from None
    return tuple(networks)


def allowed(address: str, networks: Networks) -> bool:
    """Whether an IP address lies in one of `networks` (any address when there are none)."""
    if not networks:
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def checked_addresses(host: str, port: int, networks: Networks) -> list[str]:
    """The addresses of `host`, all inside `networks`; AddressRefused otherwise."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            addresses = await resolve(host.strip("[]"), port)
    except (OSError, TimeoutError, UnicodeError):
        raise HostUnresolved() from None
    if not addresses:
        raise HostUnresolved()
    for address in addresses:
        if not allowed(address, networks):
            raise NetworkRefused(address)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself and connects only to addresses inside the networks, so a
    name that resolves elsewhere after it was accepted still reaches nothing."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, networks: Networks) -> None:
        self._inner = inner
        self._networks = networks

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        """Connect to the first checked address that answers."""
        addresses = await checked_addresses(host, port, self._networks)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address,
                                                     socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        """Printers are never on a Unix socket."""
        raise AddressRefused("unix sockets are not printer addresses")

    async def sleep(self, seconds: float) -> None:
        """As the inner backend sleeps."""
        await self._inner.sleep(seconds)


def printer_transport(networks: Networks, limits: httpx.Limits | None = None
                      ) -> httpx.AsyncHTTPTransport:
    """An httpx transport for printers; with networks given, it connects only to addresses
    inside them. (A client given a transport uses no proxy from the environment either.)"""
    transport = httpx.AsyncHTTPTransport(limits=limits or DEFAULT_LIMITS)
    if networks:
        pool = transport._pool  # httpx builds the pool; its backend is the one hook it has
        pool._network_backend = GuardedBackend(pool._network_backend, networks)
    return transport
