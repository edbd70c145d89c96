"""Shared HTTP handling of the networked printer clients."""

from __future__ import annotations

import errno
import math
import socket
from typing import Any

import httpx

from mes.printers.base import (
    PrinterBusy,
    PrinterError,
    PrinterNoAnswer,
    PrinterNotSent,
    PrinterRefused,
)
from mes.printers.networks import AddressRefused, Networks, printer_transport

DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class ClientGroups:
    """httpx clients shared by groups of printers.

    A client per printer costs about 1 MB; one client for all printers costs O(N) per
    request, because httpcore scans its whole pool each time. Groups of PER_CLIENT sit
    between the two. With `networks`, every client connects only to addresses inside them.
    """

    PER_CLIENT = 5

    def __init__(self, networks: Networks = (), user_agent: str | None = None) -> None:
        self._clients: list[httpx.AsyncClient] = []
        self._handed_out = 0
        self._networks = networks
        self._user_agent = user_agent

    def next(self) -> httpx.AsyncClient:
        """The client for the next printer."""
        if self._handed_out % self.PER_CLIENT == 0:
            limits = httpx.Limits(max_connections=self.PER_CLIENT * 2,
                                  max_keepalive_connections=self.PER_CLIENT * 2)
            client = printer_client(self._networks, limits)
            if self._user_agent:  # tells the printer's log (and the emulator) who asked
                client.headers["User-Agent"] = self._user_agent
            self._clients.append(client)
        self._handed_out += 1
        return self._clients[-1]

    async def aclose(self) -> None:
        """Close every client."""
        for client in self._clients:
            await client.aclose()
        self._clients.clear()


def printer_client(networks: Networks = (), limits: httpx.Limits | None = None,
                   transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client for printers: our timeouts, no redirects (a redirect would carry the
    key elsewhere), connections only inside `networks` when given."""
    return httpx.AsyncClient(transport=transport or printer_transport(networks, limits),
                             timeout=DEFAULT_TIMEOUT, follow_redirects=False)


class HttpPrinter:
    """Requests to one printer with timeouts; transport failures become PrinterError.

    Error messages are ours alone: nothing the far side sent (body, reason, headers) goes
    into them, since they end up in the printer's status, in jobs and in the log.
    """

    def __init__(self, base_url: str, headers: dict[str, str], auth: httpx.Auth | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 client: httpx.AsyncClient | None = None, networks: Networks = ()) -> None:
        self._base = base_url.rstrip("/")
        self._headers = headers
        self._auth = auth
        self._owns_client = client is None
        self._http = client or printer_client(networks, transport=transport)

    async def request(self, method: str, path: str, ok: tuple[int, ...] = (200, 204),
                      **kwargs: Any) -> httpx.Response:
        """Send a request; PrinterNotSent if no connection was made, PrinterNoAnswer if it may
        have arrived unanswered, PrinterBusy on 409, PrinterRefused on another 4xx."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        label = f"{method} {path.split('?', 1)[0]}"
        try:
            response = await self._http.request(method, self._base + path, headers=headers,
                                                auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                                                **kwargs)
        except AddressRefused as exc:
            raise PrinterNotSent(f"{label}: {exc}") from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise PrinterNotSent(f"{label}: could not connect in time") from exc
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise PrinterNotSent(f"{label}: {_connect_failure(exc)}") from exc
        except httpx.TimeoutException as exc:
            raise PrinterNoAnswer(f"{label}: timed out waiting for the answer") from exc
        except httpx.RemoteProtocolError as exc:
            raise PrinterNoAnswer(f"{label}: {UNEXPECTED} (not valid HTTP)") from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            # sent, maybe in part: "server disconnected", a reset, a write error...
            raise PrinterNoAnswer(f"{label}: the connection broke "
                                  f"({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise PrinterError(f"{label}: request failed ({type(exc).__name__})") from exc
        if response.status_code in ok:
            return response
        await response.aclose()
        message = f"{label}: {status_message(response.status_code)}"
        if response.status_code == 409:
            raise PrinterBusy(message)
        if 400 <= response.status_code < 500:
            raise PrinterRefused(message)
        raise PrinterError(message)

    async def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request whose 200 answer must be a JSON object."""
        return json_object(await self.request(method, path, ok=(200,), **kwargs))

    async def aclose(self) -> None:
        """Close the connection pool if it is this printer's own."""
        if self._owns_client:
            await self._http.aclose()


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
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "unsupported URL"
    causes = _causes(exc)
    if any(isinstance(c, socket.gaierror) for c in causes):
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
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            found += _causes(cause, depth + 1)
    return found


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or PrinterError for anything else."""
    label = f"{response.request.method} {response.request.url.path}"
    try:
        data = response.json()
    except ValueError as exc:
        raise PrinterError(f"{label}: {UNEXPECTED} (not JSON)") from exc
    if not isinstance(data, dict):
        raise PrinterError(f"{label}: {UNEXPECTED} (not a JSON object)")
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
