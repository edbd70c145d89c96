"""Pick the client for a printer from its `api` and URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from mes.config_groups import PrinterSettings
from mes.printers.base import PrinterClient
from mes.printers.duet import DuetClient
from mes.printers.mock import MockPrinter
from mes.printers.moonraker import MoonrakerClient
from mes.printers.octoprint import OctoPrintClient
from mes.printers.prusalink import PrusaLinkClient
from mes.state.urls import url_problem


def is_mock(printer: dict[str, Any]) -> bool:
    """A printer whose api is Mock or whose URL contains `mock` is simulated in-process."""
    return printer.get("api") == "Mock" or "mock" in (printer.get("url") or "").lower()


def client_for(printer: dict[str, Any], api_key: str | None, settings: PrinterSettings,
               http: Callable[[], aiohttp.ClientSession] | None = None) -> PrinterClient:
    """A new client for `printer` (a row with url and api); raises ValueError if none fits.

    Networked printers take their HTTP session from `http` (shared by all) when given;
    either way they connect only inside PRINTER_NETWORKS.
    """
    if is_mock(printer):
        return MockPrinter(settings.mock_interval, settings.mock_job_time,
                           settings.mock_bed_temperature, settings.mock_nozzle_temperature)
    url = printer.get("url")
    if not url:
        raise ValueError(f"printer {printer['id']!r} has no url")
    problem = url_problem(url)  # stored before the rule was this strict
    if problem is not None:
        raise ValueError(f"printer {printer['id']!r}: its url {problem}")
    networks = settings.targets
    if printer.get("api") == "OctoPrint":
        return OctoPrintClient(url, api_key or "", session=http() if http else None,
                               networks=networks)
    if printer.get("api") == "PrusaLink":
        return PrusaLinkClient(url, api_key=api_key, session=http() if http else None,
                               networks=networks)
    if printer.get("api") == "Moonraker":
        return MoonrakerClient(url, api_key=api_key, session=http() if http else None,
                               networks=networks)
    if printer.get("api") == "Duet":
        return DuetClient(url, password=api_key, session=http() if http else None,
                          networks=networks)
    raise ValueError(f"printer {printer['id']!r} has no api we drive "
                     "(OctoPrint, PrusaLink, Moonraker, Duet or Mock)")
