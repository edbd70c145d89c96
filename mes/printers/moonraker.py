"""Klipper through Moonraker's HTTP API (checked against Moonraker 0.11.0 with a Klipper host).

One request per poll: `GET /printer/objects/query` with the six objects a farm needs.
Moonraker answers `{"result": ...}`, or `{"error": {"code", "message"}}` with the HTTP status
in `code`; Klipper's own refusals (a print already running, a missing file) come back as
400 with Klipper's message.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import aiohttp

from mes.networks import Networks, Targets
from mes.printers.base import PrinterBusy, PrinterError, PrinterRefused, PrinterState, PrinterStatus
from mes.printers.http import (
    UNEXPECTED,
    Answer,
    HttpPrinter,
    json_object,
    number,
    section,
    upload_timeout,
)

QUERY = ("/printer/objects/query?webhooks&print_stats&virtual_sdcard&extruder&heater_bed"
         "&display_status")
# print_stats.state as Klipper reports it. `cancelled` leaves nothing on the bed to wait for.
STATES: dict[str, PrinterState] = {
    "standby": "idle", "printing": "printing", "paused": "paused", "complete": "finished",
    "cancelled": "idle", "error": "error",
}
# Klipper's words are shown to operators: at most this much, printable characters only.
MESSAGE_CHARS = 160
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
# Klipper's refusals that mean "busy" (virtual_sdcard, print_stats): a print is running.
_BUSY = ("sd busy", "already printing", "print already in progress", "busy")


class MoonrakerClient:
    """Drives one Klipper printer through its Moonraker instance."""

    def __init__(self, url: str, api_key: str | None = None,
                 session: aiohttp.ClientSession | None = None,
                 networks: Targets | Networks = ()) -> None:
        """`api_key` is sent as X-Api-Key when given (an instance that trusts our address
        needs none). With no `session` the client makes its own when first used."""
        headers = {"X-Api-Key": api_key} if api_key else {}
        self._http = HttpPrinter(url, headers, session=session, networks=networks)

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        """One objects query; Klippy not ready is offline (starting) or error (shut down)."""
        answer = await self._http.request("GET", QUERY, ok=(200, 503))
        if answer.status == 503:  # Moonraker up, Klippy host not connected
            return PrinterStatus(state="offline", error="Klipper is not connected to Moonraker")
        return _status(_result_status(answer))

    async def upload(self, name: str, data: bytes) -> None:
        """POST /server/files/upload to `gcodes`, without printing."""
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("root", "gcodes")
        form.add_field("print", "false")
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
        await self._http.request("POST", "/server/files/upload", ok=(200, 201), data=form,
                                 timeout=upload_timeout(len(data)))

    async def start(self, name: str) -> None:
        """POST /printer/print/start?filename=NAME: Klipper's "busy" refusal is PrinterBusy."""
        await self._command(f"/printer/print/start?filename={quote(name)}")

    async def pause(self) -> None:
        """POST /printer/print/pause."""
        await self._command("/printer/print/pause")

    async def resume(self) -> None:
        """POST /printer/print/resume."""
        await self._command("/printer/print/resume")

    async def cancel(self) -> None:
        """POST /printer/print/cancel."""
        await self._command("/printer/print/cancel")

    async def delete_file(self, name: str) -> None:
        """DELETE /server/files/gcodes/NAME; a missing file is fine (Moonraker 0.11 answers
        400 "Bad Request" for it, 404 in other versions), one being printed is busy (403)."""
        answer = await self._http.request("DELETE", f"/server/files/gcodes/{quote(name)}",
                                          ok=(200, 204, 400, 403, 404))
        if answer.status == 403:
            raise PrinterBusy(f"{answer.label}: the file is in use by the printer")

    async def _command(self, path: str) -> None:
        """POST a print command; a 400 is Klipper refusing it (busy or otherwise)."""
        answer = await self._http.request("POST", path, ok=(200, 400))
        if answer.status == 400:
            message = _error_message(answer).lower()
            if any(word in message for word in _BUSY):
                raise PrinterBusy(f"{answer.label}: the printer is busy")
            raise PrinterRefused(f"{answer.label}: Klipper refused the command"
                                 f"{_quoted(_error_message(answer))}")

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()


def _result_status(answer: Answer) -> dict[str, Any]:
    """`result.status` of an objects query, or PrinterError."""
    status = section(section(json_object(answer), "result"), "status")
    if not status:
        raise PrinterError(f"{answer.label}: {UNEXPECTED} (no result.status)")
    return status


def _error_message(answer: Answer) -> str:
    """Moonraker's `error.message` of a refusal ('' when there is none)."""
    try:
        message = section(json_object(answer), "error").get("message")
    except PrinterError:
        return ""
    return message if isinstance(message, str) else ""


def klipper_words(text: Any) -> str:
    """Klipper's message made safe to show: printable ASCII, one line, bounded."""
    if not isinstance(text, str):
        return ""
    cleaned = _UNPRINTABLE.sub(" ", text).strip()
    return cleaned[:MESSAGE_CHARS]


def _quoted(text: Any) -> str:
    words = klipper_words(text)
    return f" ({words})" if words else ""


def _status(objects: dict[str, Any]) -> PrinterStatus:
    webhooks = section(objects, "webhooks")
    klippy = webhooks.get("state")
    if klippy != "ready":
        state: PrinterState = "offline" if klippy == "startup" else "error"
        what = "starting" if klippy == "startup" else f"in state {klipper_words(klippy)!r}"
        return PrinterStatus(state=state, error=f"Klipper is {what}"
                             f"{_quoted(webhooks.get('state_message'))}")
    stats = section(objects, "print_stats")
    raw = stats.get("state")
    state = STATES.get(raw, "error") if isinstance(raw, str) else "error"
    sdcard = section(objects, "virtual_sdcard")
    extruder, bed = section(objects, "extruder"), section(objects, "heater_bed")
    fraction = number(sdcard.get("progress"))
    if fraction is None:
        fraction = number(section(objects, "display_status").get("progress"))
    progress = None if fraction is None else min(100.0, max(0.0, fraction * 100.0))
    if state == "finished":
        progress = 100.0
    printed = number(stats.get("print_duration"))
    name = stats.get("filename")
    error = None
    if state == "error":
        error = ("Klipper reports a print error" if raw == "error"
                 else "Klipper reports an unknown print state") + _quoted(stats.get("message"))
    return PrinterStatus(
        state=state,
        nozzle_actual=number(extruder.get("temperature")),
        nozzle_target=number(extruder.get("target")),
        bed_actual=number(bed.get("temperature")),
        bed_target=number(bed.get("target")),
        file_name=name if isinstance(name, str) and name else None,
        progress=progress,
        time_printed=printed,
        time_left=_time_left(state, printed, fraction),
        error=error,
    )


def _time_left(state: PrinterState, printed: float | None, fraction: float | None
               ) -> float | None:
    """Klipper gives no time left: estimated from the time printed and the file progress."""
    if state == "finished":
        return 0.0
    if state not in ("printing", "paused") or printed is None or not fraction:
        return None
    return max(0.0, printed / fraction - printed)
