"""OctoPrint's REST API (checked against OctoPrint 1.11 with its Virtual Printer)."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

import aiohttp

from mes.networks import Networks, Targets
from mes.printers.base import PrinterError, PrinterState, PrinterStatus
from mes.printers.http import HttpPrinter, json_object, number, section, upload_timeout

# No port: OctoPrint connects with its saved serial settings (VIRTUAL for the virtual printer).
CONNECT = {"command": "connect"}


class OctoPrintClient:
    """Drives one OctoPrint instance with its API key."""

    def __init__(self, url: str, api_key: str, session: aiohttp.ClientSession | None = None,
                 networks: Targets | Networks = ()) -> None:
        """With no `session` the client makes its own (inside the event loop, when first
        used); one shared by many printers is cheaper."""
        self._http = HttpPrinter(url, {"X-Api-Key": api_key}, session=session,
                                 networks=networks)

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        """GET /api/printer and /api/job; connects the printer when OctoPrint is disconnected."""
        response = await self._http.request("GET", "/api/printer", ok=(200, 409))
        if response.status == 409:  # "Printer is not operational": not connected
            await self._connect()
            return PrinterStatus(state="offline", error="printer not connected to OctoPrint")
        printer = json_object(response)
        flags = section(section(printer, "state"), "flags")
        if not expect_job and flags.get("operational") and not any(
                flags.get(f) for f in ("printing", "paused", "pausing", "cancelling",
                                       "finishing", "error")):
            return _status(printer, {})
        job = await self._http.json("GET", "/api/job")
        return _status(printer, job)

    async def _connect(self) -> None:
        with contextlib.suppress(PrinterError):  # reported offline; the next tick tries again
            await self._http.request("POST", "/api/connection", json_body=CONNECT)

    async def upload(self, name: str, data: bytes) -> None:
        """POST /api/files/local without select or print: only stores the file."""
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
        form.add_field("select", "false")
        form.add_field("print", "false")
        await self._http.request("POST", "/api/files/local", ok=(200, 201), data=form,
                                 timeout=upload_timeout(len(data)))

    async def start(self, name: str) -> None:
        """POST /api/files/local/NAME select and print: 204 started, 409 busy, 404 no file."""
        await self._http.request("POST", f"/api/files/local/{quote(name)}",
                                 json_body={"command": "select", "print": True})

    async def pause(self) -> None:
        """POST /api/job pause."""
        await self._http.request("POST", "/api/job",
                                 json_body={"command": "pause", "action": "pause"})

    async def resume(self) -> None:
        """POST /api/job resume."""
        await self._http.request("POST", "/api/job",
                                 json_body={"command": "pause", "action": "resume"})

    async def cancel(self) -> None:
        """POST /api/job cancel."""
        await self._http.request("POST", "/api/job", json_body={"command": "cancel"})

    async def delete_file(self, name: str) -> None:
        """DELETE /api/files/local/NAME; a missing file is fine, one still printing is busy."""
        await self._http.request("DELETE", f"/api/files/local/{name}", ok=(200, 204, 404))

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()


def _status(printer: dict[str, Any], job: dict[str, Any]) -> PrinterStatus:
    state = section(printer, "state")
    flags = section(state, "flags")
    temps = section(printer, "temperature")
    tool, bed = section(temps, "tool0"), section(temps, "bed")
    progress = section(job, "progress")
    file_info = section(section(job, "job"), "file")
    completion = number(progress.get("completion"))
    name = file_info.get("name") if isinstance(file_info.get("name"), str) else None

    normalised: PrinterState
    if flags.get("error") or flags.get("closedOrError"):
        normalised = "error"
    elif flags.get("paused") or flags.get("pausing"):
        normalised = "paused"
    elif flags.get("printing") or flags.get("cancelling") or flags.get("finishing"):
        normalised = "printing"
    elif flags.get("operational"):
        normalised = "finished" if completion is not None and completion >= 100 else "idle"
    else:
        normalised = "offline"
    return PrinterStatus(
        state=normalised,
        nozzle_actual=number(tool.get("actual")), nozzle_target=number(tool.get("target")),
        bed_actual=number(bed.get("actual")), bed_target=number(bed.get("target")),
        file_name=name, progress=completion,
        time_printed=number(progress.get("printTime")),
        time_left=number(progress.get("printTimeLeft")),
        # OctoPrint's own state text is the far side's words: the status shows ours
        error="OctoPrint reports a printer error" if normalised == "error" else None,
    )
