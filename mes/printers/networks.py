"""PRINTER_NETWORKS: the address ranges printers may be at, checked when a URL is given and
again on every new connection (a name may resolve elsewhere later)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from aiohttp.tracing import Trace

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = tuple[Network, ...]
# How long one name lookup may take, at the REST edge and before a connection.
RESOLVE_TIMEOUT = 5.0
# Connections open to one printer at most, and how long an idle one is kept (a printer is
# polled every PRINTER_WORKER_INTERVAL, so one connection stays in use).
PER_PRINTER = 4
KEEPALIVE_SECONDS = 30.0


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


class GuardedResolver(AbstractResolver):
    """Resolves names with `resolve` and answers only addresses inside the networks."""

    def __init__(self, networks: Networks) -> None:
        self._networks = networks

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """Every address of `host`, all checked; AddressRefused if one is outside."""
        addresses = await checked_addresses(host, port, self._networks)
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for address in addresses]

    async def close(self) -> None:
        """Nothing to release."""


class GuardedConnector(aiohttp.TCPConnector):
    """Connects only to addresses inside the networks: a name is resolved again for every
    new connection (no DNS cache), so one that resolves elsewhere later reaches nothing; an
    address written in the URL (which aiohttp never hands to a resolver) is checked here."""

    def __init__(self, networks: Networks, **kwargs: Any) -> None:
        super().__init__(resolver=GuardedResolver(networks), use_dns_cache=False, **kwargs)
        self._networks = networks

    async def _resolve_host(self, host: str, port: int,
                            traces: Sequence[Trace] | None = None) -> list[ResolveResult]:
        if is_ip_address(host) and not allowed(host.strip("[]"), self._networks):
            raise NetworkRefused(host.strip("[]"))
        results: list[ResolveResult] = await super()._resolve_host(host, port, traces)
        for result in results:  # never reached otherwise: checked once more all the same
            if not allowed(result["host"], self._networks):
                raise NetworkRefused(result["host"])
        return results


def guarded_connector(networks: Networks) -> aiohttp.TCPConnector:
    """An aiohttp connector for printers: no limit on connections in all (every printer keeps
    one alive), at most PER_PRINTER to one printer; with networks given, it connects only to
    addresses inside them."""
    options: dict[str, Any] = {"limit": 0, "limit_per_host": PER_PRINTER,
                               "keepalive_timeout": KEEPALIVE_SECONDS}
    if networks:
        return GuardedConnector(networks, **options)
    return aiohttp.TCPConnector(**options)
