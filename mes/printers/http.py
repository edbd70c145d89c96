"""Shared HTTP handling of the networked printer clients (aiohttp).

A poll is most of what a node does: one aiohttp session for all printers costs about a
fifth of the CPU per request that httpx did (bench/poll_cost.py).
"""

from __future__ import annotations

import errno
import json
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from mes.networks import AddressRefused, Networks, Targets, guarded_connector
from mes.printers.base import (
    PrinterBusy,
    PrinterError,
    PrinterNoAnswer,
    PrinterNotSent,
    PrinterRefused,
)

# Connecting (name lookup and TCP) may take 2 s; the answer may be 5 s apart between reads.
CONNECT_SECONDS = 2.0
READ_SECONDS = 5.0
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=CONNECT_SECONDS,
                                        sock_connect=CONNECT_SECONDS, sock_read=READ_SECONDS)
# An upload may take this long plus a second per UPLOAD_RATE bytes, no longer.
UPLOAD_BASE_SECONDS = 30.0
UPLOAD_RATE = 50_000
# Parsed URLs each printer keeps (its poll's few paths; file paths come and go).
MAX_URLS = 16


def printer_session(networks: Targets | Networks = (),
                    timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
                    user_agent: str | None = None) -> aiohttp.ClientSession:
    """An aiohttp session for printers: our timeouts, no proxy from the environment, no
    cookies kept, connections only inside `networks` when given, `user_agent` on every
    request when given. Call inside the loop."""
    return aiohttp.ClientSession(connector=guarded_connector(networks), timeout=timeout,
                                 trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                 raise_for_status=False,
                                 headers={"User-Agent": user_agent} if user_agent else None)


class SharedSession:
    """One aiohttp session for every printer of a worker pool, made on first use."""

    def __init__(self, networks: Targets | Networks = (), user_agent: str | None = None) -> None:
        self._networks = networks
        self._user_agent = user_agent  # tells the printer's log (and the emulator) who asked
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session (made now if it is not yet); call inside the event loop."""
        if self._session is None or self._session.closed:
            self._session = printer_session(self._networks, user_agent=self._user_agent)
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A printer's whole answer, read: status and body (the connection is released)."""

    label: str  # "GET /api/printer": the request, in our words
    status: int
    body: bytes


class HttpPrinter:
    """Requests to one printer with timeouts; transport failures become PrinterError.

    Error messages are ours alone: nothing the far side sent (body, reason, headers) goes
    into them, since they end up in the printer's status, in jobs and in the log.
    """

    def __init__(self, base_url: str, headers: Mapping[str, str],
                 digest: tuple[str, str] | None = None,
                 session: aiohttp.ClientSession | None = None, networks: Targets | Networks = (),
                 timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT) -> None:
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._middlewares = (aiohttp.DigestAuthMiddleware(*digest),) if digest else ()
        self._owns_session = session is None
        self._session = session
        self._networks = networks
        self._timeout = timeout
        self._urls: dict[str, URL] = {}  # parsed once: a poll asks the same paths each tick

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = printer_session(self._networks, self._timeout)
        return self._session

    async def request(self, method: str, path: str, ok: tuple[int, ...] = (200, 204),
                      headers: Mapping[str, str] | None = None, *, json_body: Any = None,
                      data: Any = None, timeout: aiohttp.ClientTimeout | None = None
                      ) -> Answer:
        """Send a request and read the answer; PrinterNotSent if no connection was made,
        PrinterNoAnswer if it may have arrived unanswered, PrinterBusy on 409,
        PrinterRefused on another 4xx."""
        label = f"{method} {path.split('?', 1)[0]}"
        sent_headers = {**self._headers, **headers} if headers else self._headers
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":"))
            sent_headers = {**sent_headers, "Content-Type": "application/json"}
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= MAX_URLS:
                self._urls.clear()
            url = self._urls[path] = URL(self._base + path)
        try:
            async with self._client().request(
                    method, url, headers=sent_headers, data=data,
                    allow_redirects=False, middlewares=self._middlewares,
                    **options) as response:
                status = response.status
                body = await response.read() if status in ok else b""
        except AddressRefused as exc:
            raise PrinterNotSent(f"{label}: {exc}") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise PrinterNotSent(f"{label}: could not connect in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise PrinterNotSent(f"{label}: {_connect_failure(exc)}") from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PrinterNotSent(f"{label}: unsupported URL") from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise PrinterNoAnswer(f"{label}: timed out waiting for the answer") from exc
        except aiohttp.ClientResponseError as exc:  # the answer could not be parsed
            raise PrinterNoAnswer(f"{label}: {UNEXPECTED} (not valid HTTP)") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            # sent, maybe in part: "server disconnected", a reset, a write error...
            raise PrinterNoAnswer(f"{label}: the connection broke "
                                  f"({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise PrinterError(f"{label}: request failed ({type(exc).__name__})") from exc
        if status in ok:
            return Answer(label, status, body)
        message = f"{label}: {status_message(status)}"
        if status == 409:
            raise PrinterBusy(message)
        if 400 <= status < 500:
            raise PrinterRefused(message)
        raise PrinterError(message)

    async def json(self, method: str, path: str) -> dict[str, Any]:
        """A request whose 200 answer must be a JSON object."""
        return json_object(await self.request(method, path, ok=(200,)))

    async def aclose(self) -> None:
        """Close the session if it is this printer's own."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def upload_timeout(size: int) -> aiohttp.ClientTimeout:
    """The timeouts of an upload of `size` bytes: connect and read as usual, and the whole
    request within UPLOAD_BASE_SECONDS plus a second per UPLOAD_RATE bytes."""
    return aiohttp.ClientTimeout(total=UPLOAD_BASE_SECONDS + size / UPLOAD_RATE,
                                 connect=CONNECT_SECONDS, sock_connect=CONNECT_SECONDS,
                                 sock_read=READ_SECONDS)


UNEXPECTED = "unexpected answer from the printer"


def status_message(status: int) -> str:
    """Our words for an HTTP status the printer answered with (never its body)."""
    if status in (401, 403):
        return f"HTTP {status} from the printer (check its API key)"
    if status == 404:
        return "HTTP 404 from the printer (not found)"
    if status == 409:
        return "HTTP 409 from the printer (busy)"
    if 300 <= status < 400:
        return f"{UNEXPECTED} (a redirect, HTTP {status}; check the URL)"
    if 400 <= status < 600:
        return f"HTTP {status} from the printer"
    return f"{UNEXPECTED} (HTTP {status})"


def _connect_failure(exc: BaseException) -> str:
    """Why a connection failed, from the OS error underneath (never the far side's words)."""
    causes = _causes(exc)
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or any(
            isinstance(c, socket.gaierror) for c in causes):
        return "host name does not resolve"
    if any(isinstance(c, ConnectionRefusedError) or getattr(c, "errno", None) ==
           errno.ECONNREFUSED for c in causes):
        return "connection refused"
    return "cannot connect"


def _causes(exc: BaseException, depth: int = 0) -> list[BaseException]:
    """`exc` and every exception it was raised from or groups, a few levels deep."""
    found = [exc]
    if depth < 8:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                found += _causes(inner, depth + 1)
        inner_os = getattr(exc, "os_error", None)
        if isinstance(inner_os, BaseException) and inner_os is not exc:
            found += _causes(inner_os, depth + 1)
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            found += _causes(cause, depth + 1)
    return found


def json_object(answer: Answer) -> dict[str, Any]:
    """The answer's JSON object, or PrinterError for anything else."""
    try:
        data = json.loads(answer.body)
    except ValueError as exc:  # also a body that is not UTF-8
        raise PrinterError(f"{answer.label}: {UNEXPECTED} (not JSON)") from exc
    if not isinstance(data, dict):
        raise PrinterError(f"{answer.label}: {UNEXPECTED} (not a JSON object)")
    return data


def section(data: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested JSON object, or an empty one when it is missing or not an object."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float | None:
    """A float from a JSON value, or None for anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
