"""Where printers and webhooks may be: PRINTER_NETWORKS / WEBHOOK_NETWORKS (the address ranges
allowed) and ALLOW_LOCAL_ADDRESSES (loopback, unspecified, link-local and cloud-metadata
addresses are refused unless it is set), checked when a URL is given and again on every new
connection (a name may resolve elsewhere later)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from aiohttp.tracing import Trace

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = tuple[Network, ...]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services that are not link-local (169.254.169.254 is): AWS over IPv6,
# Alibaba Cloud. Refused with the local addresses.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200"))


@dataclass(frozen=True)
class Targets:
    """Where connections may go: inside `networks` (any address when empty), and to a
    local address (the server's own host, link-local, metadata) only if `allow_local`."""

    networks: Networks = ()
    allow_local: bool = False

    @property
    def unrestricted(self) -> bool:
        """True when every address is allowed (nothing to check)."""
        return not self.networks and self.allow_local


# What a client built without settings (a test, a tool) may reach: anything.
ANYWHERE = Targets((), allow_local=True)
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


class LocalRefused(AddressRefused):
    """The host resolves to a loopback, unspecified, link-local or metadata address."""

    def __init__(self, address: str, kind: str) -> None:
        super().__init__(f"address {address} is {kind}; such addresses are refused unless "
                         "ALLOW_LOCAL_ADDRESSES=true")
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


def targets_of(value: Targets | Networks) -> Targets:
    """`value` as Targets: bare networks are an explicit choice, local addresses included."""
    return value if isinstance(value, Targets) else Targets(value, allow_local=True)


def _plain(address: str) -> IPAddress:
    ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return inner
    return ip


def local_kind(address: str) -> str | None:
    """What makes an IP address local ("loopback", ...), or None for any other address."""
    ip = _plain(address)
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified (this host)"
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    return None


def refusal(address: str, targets: Targets | Networks) -> AddressRefused | None:
    """Why a connection to an IP address is refused under `targets`, or None if allowed."""
    targets = targets_of(targets)
    if not targets.allow_local:
        kind = local_kind(address)
        if kind is not None:
            return LocalRefused(address.strip("[]"), kind)
    if targets.networks:
        ip = _plain(address)
        if not any(ip.version == net.version and ip in net for net in targets.networks):
            return NetworkRefused(address.strip("[]"))
    return None


def allowed(address: str, targets: Targets | Networks) -> bool:
    """Whether a connection to an IP address is allowed under `targets`."""
    return refusal(address, targets) is None


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def checked_addresses(host: str, port: int, networks: Targets | Networks) -> list[str]:
    """The addresses of `host`, all allowed by `networks`; AddressRefused otherwise."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            addresses = await resolve(host.strip("[]"), port)
    except (OSError, TimeoutError, UnicodeError):
        raise HostUnresolved() from None
    if not addresses:
        raise HostUnresolved()
    for address in addresses:
        problem = refusal(address, networks)
        if problem is not None:
            raise problem
    return addresses


class GuardedResolver(AbstractResolver):
    """Resolves names with `resolve` and answers only addresses inside the networks."""

    def __init__(self, networks: Targets) -> None:
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

    def __init__(self, networks: Targets, **kwargs: Any) -> None:
        super().__init__(resolver=GuardedResolver(networks), use_dns_cache=False, **kwargs)
        self._networks = networks

    async def _resolve_host(self, host: str, port: int,
                            traces: Sequence[Trace] | None = None) -> list[ResolveResult]:
        if is_ip_address(host.strip("[]")):
            problem = refusal(host, self._networks)
            if problem is not None:
                raise problem
        results: list[ResolveResult] = await super()._resolve_host(host, port, traces)
        for result in results:  # never reached otherwise: checked once more all the same
            problem = refusal(result["host"], self._networks)
            if problem is not None:
                raise problem
        return results


def guarded_connector(networks: Targets | Networks) -> aiohttp.TCPConnector:
    """An aiohttp connector for printers: no limit on connections in all (every printer keeps
    one alive), at most PER_PRINTER to one printer; it connects only to addresses `networks`
    allows."""
    options: dict[str, Any] = {"limit": 0, "limit_per_host": PER_PRINTER,
                               "keepalive_timeout": KEEPALIVE_SECONDS}
    targets = targets_of(networks)
    if targets.unrestricted:
        return aiohttp.TCPConnector(**options)
    return GuardedConnector(targets, **options)
