"""Duet boards running RepRapFirmware 3, standalone: the `rr_` HTTP API.

Facts from the firmware's own source (HttpResponder.cpp, GCodes2.cpp, PrintMonitor.cpp):

- a session is made by `GET /rr_connect?password=` (the printer's `api_key` is its machine
  password; none set means "reprap", which any password passes); with `sessionKey=yes`
  (3.5+) the answer names a key sent back as `X-Session-Key`; a session idles out after
  8 s, and every request without one answers 401, so a 401 connects again once;
- one poll is `rr_model?key=&flags=d99fn` (every live field); the job's file name and size
  are not live and are read with `key=job` when a new job appears (`seqs.job`);
- `state.status` has no "printing": a running print is `processing`. Standalone firmware
  does not say whether the last print completed or was cancelled; a cancel needs the print
  paused first (M25, then M0), so a print that went from running to idle completed, and one
  that went from paused (or cancelling) to idle was cancelled, as Duet Web Control infers.
  A client that starts watching an idle printer (a node that just took the printer over)
  takes its last file (`job.lastFileName`) as completed: prints end all the time, while a
  cancel at the printer in the seconds a printer moves between nodes is rare, and a
  completed print reported lost would tell its user it failed;
- G-code goes by `rr_gcode` (`{"buff": N}`; `{"err": 1}` when it was not taken), its
  errors come later by `rr_reply`: a start (`M32`) is one request, and a printer that is
  already printing refuses it without harm.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from mes.networks import Networks, Targets
from mes.printers.base import (
    PrinterBusy,
    PrinterError,
    PrinterRefused,
    PrinterState,
    PrinterStatus,
)
from mes.printers.http import (
    UNEXPECTED,
    Answer,
    HttpPrinter,
    json_object,
    number,
    section,
    upload_timeout,
)

GCODES = "0:/gcodes/"
POLL = "/rr_model?key=&flags=d99fn"
JOB = "/rr_model?key=job&flags=d99vn"
HEATERS = "/rr_model?key=heat&flags=d99vn"
TOOLS = "/rr_model?key=tools&flags=d99vn"
DEFAULT_PASSWORD = "reprap"
# Duet's usual wiring when the model does not say: bed heater 0, the first tool's heater 1.
DEFAULT_BED, DEFAULT_TOOL = 0, 1
# How long a cancel waits for the print to be paused before M0 (RRF cancels only then).
PAUSE_WAIT = 10.0

RUNNING = {"processing", "resuming", "simulating", "cancelling"}
PAUSED = {"pausing", "paused"}
OFFLINE_WORDS = {"starting": "Duet is starting", "updating": "Duet is updating its firmware",
                 "off": "Duet is powered off"}


class DuetClient:
    """Drives one Duet (RepRapFirmware 3, standalone) through its rr_ API."""

    def __init__(self, url: str, password: str | None = None,
                 session: aiohttp.ClientSession | None = None,
                 networks: Targets | Networks = ()) -> None:
        """`password` is the machine password (M551), the printer's `api_key`; none set is
        RepRapFirmware's default. With no `session` the client makes its own."""
        self._http = HttpPrinter(url, {}, session=session, networks=networks)
        self._password = password or DEFAULT_PASSWORD
        self._key: str | None = None  # the session key of RRF 3.5+, if it gave one
        self._connected = False
        self._heaters: tuple[int, int] | None = None  # (tool, bed) heater indices
        self._job_seq: Any = object()  # seqs.job when the job's file was last read
        self._job: dict[str, Any] = {}
        self._running_file: str | None = None  # the file seen running, paused: its state
        self._last_active: str | None = None
        self._finished: str | None = None  # the last file that completed while watched
        self._first = True  # no status read yet: the past is the printer's word

    # -- requests ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        answer = await self._http.request(
            "GET", f"/rr_connect?password={quote(self._password)}&sessionKey=yes", ok=(200,))
        data = json_object(answer)
        err = data.get("err")
        if err == 1:
            raise PrinterRefused("GET /rr_connect: the printer refused its password "
                                 "(check its API key: the Duet's machine password)")
        if err != 0:
            raise PrinterError("GET /rr_connect: no session free on the printer")
        key = data.get("sessionKey")
        self._key = str(key) if isinstance(key, int) and not isinstance(key, bool) \
            and key != 0 else None
        self._connected = True

    async def _request(self, method: str, path: str, data: Any = None,
                       timeout: aiohttp.ClientTimeout | None = None) -> Answer:
        """A request in a session: connects first, and once more after a 401."""
        for attempt in (1, 2):
            if not self._connected:
                await self._connect()
            headers = {"X-Session-Key": self._key} if self._key else None
            answer = await self._http.request(method, path, ok=(200, 401), headers=headers,
                                              data=data, timeout=timeout)
            if answer.status != 401:
                return answer
            self._connected = False
            if attempt == 2:
                raise PrinterRefused(f"{answer.label}: HTTP 401 from the printer "
                                     "(check its API key: the Duet's machine password)")
        raise AssertionError("unreachable")

    async def _model(self, path: str) -> Any:
        data = json_object(await self._request("GET", path))
        if "result" not in data:
            raise PrinterError(f"GET /rr_model: {UNEXPECTED} (no result)")
        return data["result"]

    async def _gcode(self, code: str) -> None:
        """Queue G-code; PrinterRefused when the printer did not take it."""
        answer = await self._request("GET", f"/rr_gcode?gcode={quote(code)}")
        data = json_object(answer)
        if data.get("err") is not None or not isinstance(data.get("buff"), int):
            raise PrinterRefused(f"GET /rr_gcode: the printer did not take {code.split()[0]}")

    # -- status -----------------------------------------------------------------------------

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        """One live-model read; the job's file when a new job appears; heaters once."""
        model = await self._model(POLL)
        if not isinstance(model, dict):
            raise PrinterError(f"GET /rr_model: {UNEXPECTED} (not an object model)")
        state = section(model, "state")
        raw = state.get("status")
        if not isinstance(raw, str):
            raise PrinterError(f"GET /rr_model: {UNEXPECTED} (no state.status)")
        if raw in OFFLINE_WORDS:
            return PrinterStatus(state="offline", error=OFFLINE_WORDS[raw])
        if self._heaters is None:
            self._heaters = await self._heater_indices()
        job = section(model, "job")
        seq = section(model, "seqs").get("job")
        if seq != self._job_seq or (raw in RUNNING | PAUSED and not self._job_file()):
            found = await self._model(JOB)
            self._job = found if isinstance(found, dict) else {}
            self._job_seq = seq
        live_file = _base_name(section(self._job, "file").get("fileName")) \
            if raw in RUNNING | PAUSED | {"busy", "changingTool"} else None
        if self._first:
            self._first = False
            if raw not in RUNNING | PAUSED:  # an end nobody watched: taken as completed
                self._finished = _base_name(self._job.get("lastFileName"))
        normalised = self._normalise(raw, live_file)
        heaters = model.get("heat", {}).get("heaters") if isinstance(model.get("heat"), dict) \
            else None
        tool, bed = _heater(heaters, self._heaters[0]), _heater(heaters, self._heaters[1])
        size = number(section(self._job, "file").get("size"))
        position = number(job.get("filePosition"))
        progress = None
        if normalised in ("printing", "paused") and size and position is not None:
            progress = min(100.0, max(0.0, 100.0 * position / size))
        file_name = live_file if normalised in ("printing", "paused") else None
        if normalised == "finished":
            file_name, progress = self._finished, 100.0
        times = section(job, "timesLeft")
        left = number(times.get("file"))
        if left is None:
            left = number(times.get("slicer"))
        return PrinterStatus(
            state=normalised,
            nozzle_actual=number(tool.get("current")), nozzle_target=number(tool.get("active")),
            bed_actual=number(bed.get("current")), bed_target=number(bed.get("active")),
            file_name=file_name, progress=progress,
            time_printed=number(job.get("duration")),
            time_left=0.0 if normalised == "finished" else (
                left if normalised in ("printing", "paused") else None),
            error=("Duet is halted (emergency stop or a fault); reset it to go on"
                   if normalised == "error" else None),
        )

    def _job_file(self) -> str | None:
        return _base_name(section(self._job, "file").get("fileName"))

    def _normalise(self, raw: str, live_file: str | None) -> PrinterState:
        """The state, following the print it watches from running to its end."""
        if raw == "halted":
            self._running_file = None
            return "error"
        if raw in RUNNING or (raw in ("busy", "changingTool") and live_file):
            if live_file != self._running_file:
                self._finished = None
            self._running_file, self._last_active = live_file, raw
            return "printing"
        if raw in PAUSED:
            self._running_file, self._last_active = live_file, raw
            return "paused"
        # idle (or busy with no file): a print we watched has ended
        if self._running_file is not None:
            completed = self._last_active in ("processing", "resuming", "simulating")
            self._finished = self._running_file if completed else None
            self._running_file = None
        return "finished" if self._finished else "idle"

    async def _heater_indices(self) -> tuple[int, int]:
        """(tool heater, bed heater) from the model, Duet's usual ones when it says none."""
        tool, bed = DEFAULT_TOOL, DEFAULT_BED
        try:
            heat = await self._model(HEATERS)
            beds = heat.get("bedHeaters") if isinstance(heat, dict) else None
            if isinstance(beds, list) and beds and isinstance(beds[0], int) and beds[0] >= 0:
                bed = beds[0]
            tools = await self._model(TOOLS)
            first = tools[0] if isinstance(tools, list) and tools else None
            heaters = first.get("heaters") if isinstance(first, dict) else None
            if isinstance(heaters, list) and heaters and isinstance(heaters[0], int):
                tool = heaters[0]
        except PrinterRefused:
            raise
        except PrinterError:  # an older firmware without these keys: the usual wiring
            pass
        return tool, bed

    # -- commands ---------------------------------------------------------------------------

    async def upload(self, name: str, data: bytes) -> None:
        """POST /rr_upload?name=0:/gcodes/NAME with the raw file (overwrites)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        answer = await self._request(
            "POST", f"/rr_upload?name={quote(GCODES + name)}&time={quote(stamp)}",
            data=data, timeout=upload_timeout(len(data)))
        if json_object(answer).get("err") != 0:
            raise PrinterError("POST /rr_upload: the printer could not store the file")

    async def start(self, name: str) -> None:
        """M32 "0:/gcodes/NAME": one request; a busy printer refuses it harmlessly."""
        await self._gcode(f'M32 "{GCODES}{name}"')

    async def pause(self) -> None:
        """M25 (runs the printer's pause.g)."""
        await self._gcode("M25")

    async def resume(self) -> None:
        """M24 (runs resume.g)."""
        await self._gcode("M24")

    async def cancel(self) -> None:
        """M0 once the print is paused (M25 first when it runs): RRF cancels only then."""
        model = await self._model(POLL)
        raw = section(model, "state").get("status") if isinstance(model, dict) else None
        if raw in RUNNING:
            await self._gcode("M25")
            deadline = time.monotonic() + PAUSE_WAIT
            while raw != "paused" and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                model = await self._model(POLL)
                raw = section(model, "state").get("status") if isinstance(model, dict) \
                    else None
        self._last_active = "cancelling"  # whatever ends now was not completed
        await self._gcode("M0")

    async def delete_file(self, name: str) -> None:
        """rr_delete: a missing file is fine; the file being printed is busy."""
        answer = await self._request("GET", f"/rr_delete?name={quote(GCODES + name)}")
        if json_object(answer).get("err") == 0:
            return
        status = await self.status()
        if status.state in ("printing", "paused") and status.file_name == name:
            raise PrinterBusy("GET /rr_delete: the file is being printed")

    async def aclose(self) -> None:
        """Close connections (the session idles out on the printer)."""
        await self._http.aclose()


def _base_name(path: Any) -> str | None:
    """`0:/gcodes/x.gcode` -> `x.gcode` (files outside gcodes/ keep their path)."""
    if not isinstance(path, str) or not path:
        return None
    for prefix in (GCODES, "/gcodes/", "gcodes/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _heater(heaters: Any, index: int) -> dict[str, Any]:
    found = heaters[index] if isinstance(heaters, list) and 0 <= index < len(heaters) else None
    return found if isinstance(found, dict) else {}
