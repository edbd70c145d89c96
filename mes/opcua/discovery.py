"""FindServers answers with every node of the redundant set, so a client needs one URL.

Each node announces its OPC UA endpoint through Raft (`node.announce`, level 6); this keeps
asyncua's list of known servers equal to those announcements, every node but this one
(asyncua lists this one itself, with the endpoint the client used). A node that runs no
OPC UA server, or has not announced one yet (an older release), is not listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Server, ua
from asyncua.server.internal_server import ServerDesc
from sqlalchemy import Connection

from mes.opcua.redundancy import application_uri
from mes.state import queries

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0
PRODUCT_URI = "urn:mes:print-farm"

Read = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


def peer_description(raft_address: str, opcua_url: str) -> ua.ApplicationDescription:
    """The ApplicationDescription of another node, as its own server describes itself."""
    description = ua.ApplicationDescription()
    description.ApplicationUri = application_uri(raft_address)
    description.ProductUri = PRODUCT_URI
    description.ApplicationName = ua.LocalizedText(f"mes node {raft_address}")
    description.ApplicationType = ua.ApplicationType.Server
    description.DiscoveryUrls = [opcua_url]
    return description


class PeerDiscovery:
    """Keeps the server's known servers equal to the other nodes' announced endpoints."""

    def __init__(self, server: Server, read: Read, own_address: str) -> None:
        self._server = server
        self._read = read
        self._own_uri = application_uri(own_address)
        self.listed: dict[str, str] = {}  # ApplicationUri -> the endpoint listed

    async def refresh(self) -> None:
        """Read the announcements and update the list where it changed."""
        announced = await self._read(queries.list_nodes)
        wanted = {application_uri(n["raft_address"]): (n["raft_address"], n["opcua_url"])
                  for n in announced if n.get("opcua_url")}
        wanted.pop(self._own_uri, None)
        known: dict[str, Any] = self._server.iserver._known_servers
        for uri in list(known):  # nothing but this node and the announced ones, ever
            if uri != self._own_uri and uri not in wanted:
                known.pop(uri, None)
                self.listed.pop(uri, None)
        for uri, (address, url) in wanted.items():
            if self.listed.get(uri) != url or uri not in known:
                known[uri] = ServerDesc(peer_description(address, url))
                self.listed[uri] = url

    async def run(self, interval: float = REFRESH_SECONDS) -> None:
        """Refresh until cancelled."""
        while True:
            with contextlib.suppress(Exception):
                await self.refresh()
            await asyncio.sleep(interval)
