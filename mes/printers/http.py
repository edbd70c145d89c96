"""Shared HTTP handling of the networked printer clients."""

from __future__ import annotations

import math
from typing import Any

import httpx

from mes.printers.base import (
    PrinterBusy,
    PrinterError,
    PrinterNoAnswer,
    PrinterNotSent,
    PrinterRefused,
)

DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class ClientGroups:
    """httpx clients shared by groups of printers.

    A client per printer costs about 1 MB; one client for all printers costs O(N) per
    request, because httpcore scans its whole pool each time. Groups of PER_CLIENT sit
    between the two.
    """

    PER_CLIENT = 5

    def __init__(self) -> None:
        self._clients: list[httpx.AsyncClient] = []
        self._handed_out = 0

    def next(self) -> httpx.AsyncClient:
        """The client for the next printer."""
        if self._handed_out % self.PER_CLIENT == 0:
            limits = httpx.Limits(max_connections=self.PER_CLIENT * 2,
                                  max_keepalive_connections=self.PER_CLIENT * 2)
            self._clients.append(httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, limits=limits))
        self._handed_out += 1
        return self._clients[-1]

    async def aclose(self) -> None:
        """Close every client."""
        for client in self._clients:
            await client.aclose()
        self._clients.clear()


class HttpPrinter:
    """Requests to one printer with timeouts; transport failures become PrinterError."""

    def __init__(self, base_url: str, headers: dict[str, str], auth: httpx.Auth | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._headers = headers
        self._auth = auth
        self._owns_client = client is None
        self._http = client or httpx.AsyncClient(transport=transport, timeout=DEFAULT_TIMEOUT)

    async def request(self, method: str, path: str, ok: tuple[int, ...] = (200, 204),
                      **kwargs: Any) -> httpx.Response:
        """Send a request; PrinterNotSent if no connection was made, PrinterNoAnswer if it may
        have arrived unanswered, PrinterBusy on 409, PrinterRefused on another 4xx."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = await self._http.request(method, self._base + path, headers=headers,
                                                auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                                                **kwargs)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise PrinterNotSent(f"{method} {path}: could not connect in time") from exc
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise PrinterNotSent(f"{method} {path}: cannot connect: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise PrinterNoAnswer(f"{method} {path}: no answer in time") from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            # sent, maybe in part: "server disconnected", a reset, a write error...
            raise PrinterNoAnswer(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise PrinterError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in ok:
            return response
        detail = _detail(response)
        if response.status_code == 409:
            raise PrinterBusy(f"{method} {path}: 409 {detail}")
        if 400 <= response.status_code < 500:
            raise PrinterRefused(f"{method} {path}: {response.status_code} {detail}")
        raise PrinterError(f"{method} {path}: {response.status_code} {detail}")

    async def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request whose 200 answer must be a JSON object."""
        return json_object(await self.request(method, path, ok=(200,), **kwargs))

    async def aclose(self) -> None:
        """Close the connection pool if it is this printer's own."""
        if self._owns_client:
            await self._http.aclose()


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or PrinterError for anything else."""
    label = f"{response.request.method} {response.request.url.path}"
    try:
        data = response.json()
    except ValueError as exc:
        raise PrinterError(f"{label}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise PrinterError(f"{label}: the answer is not a JSON object")
    return data


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        for key in ("text", "error", "title", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])[:200]
    return str(data)[:200]


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
