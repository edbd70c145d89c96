"""The one rule for printer and camera URLs, shared by the REST edge and the state machine.

Pure string checks, so every node applies a command the same way: `http(s)://host[:port][/path]`
in printable ASCII, with no user info, query or fragment (a key belongs in `api_key`, where it
is write-only, never in a URL that is shown and logged).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

MAX_URL_LENGTH = 2048
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_PATH = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:/]|%[0-9A-Fa-f]{2})*$")


def url_problem(value: Any) -> str | None:
    """Why `value` is not an acceptable printer URL, or None when it is."""
    if not isinstance(value, str):
        return "must be text"
    if len(value) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(not 33 <= ord(c) <= 126 for c in value):
        return "has whitespace, control or non-ASCII characters"
    if "@" in value:
        return "has user info (user:password@); give the printer's key as api_key instead"
    if "?" in value:
        return "has a query (?...); a printer URL takes none (give keys as api_key)"
    if "#" in value:
        return "has a fragment (#...)"
    if "\\" in value:
        return "has a backslash"
    scheme = _SCHEME.match(value)
    if scheme is None or scheme.group(1).lower() not in ("http", "https"):
        return "is not an http:// or https:// URL"
    authority, _, path = value[scheme.end():].partition("/")
    return _authority_problem(authority) or (
        None if _PATH.match(path) else "has characters not allowed in a URL path")


def _authority_problem(authority: str) -> str | None:
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or not _ipv6(host):
            return "has no valid host"
        if rest and not rest.startswith(":"):
            return "has no valid host"
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
        if not _hostname(host):
            return "has no valid host"
    if port is not None and (not _PORT.match(port) or not 0 < int(port) < 65536):
        return "has an invalid port (1-65535)"
    return None


def _hostname(host: str) -> bool:
    labels = host.removesuffix(".").split(".")
    return 0 < len(host) <= 253 and all(_LABEL.match(label) for label in labels)


def _ipv6(host: str) -> bool:
    if "%" in host:  # no zone ids
        return False
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True
