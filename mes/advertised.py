"""The addresses a node tells the others (and OPC UA clients) to reach it at."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# Hosts that mean "every interface" when listening, and nothing when given to a client
# (as urlsplit gives them: without an IPv6 address's brackets).
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def advertised_opcua_url(endpoint: str, advertise_url: str) -> str:
    """The OPC UA endpoint URL clients of other nodes should use: `endpoint` with a wildcard
    host replaced by the host of the node's advertised HTTP URL."""
    parts = urlsplit(endpoint)
    if (parts.hostname or "") not in WILDCARD_HOSTS:
        return endpoint
    public = urlsplit(advertise_url).hostname or "127.0.0.1"
    if ":" in public:
        public = f"[{public}]"
    netloc = f"{public}:{parts.port}" if parts.port else public
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
