"""PrusaLink's v1 API (reference/prusalink-openapi.yaml): X-Api-Key or HTTP Digest."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp

from mes.networks import Networks, Targets
from mes.printers.base import PrinterError, PrinterState, PrinterStatus
from mes.printers.http import HttpPrinter, number, section, upload_timeout

STATES: dict[str, PrinterState] = {
    "IDLE": "idle", "READY": "idle", "BUSY": "printing", "PRINTING": "printing",
    "PAUSED": "paused", "FINISHED": "finished", "STOPPED": "idle", "ERROR": "error",
    # waiting for the operator (filament runout, colour change): the print goes on after
    "ATTENTION": "paused",
}


class PrusaLinkClient:
    """Drives one PrusaLink (or Buddy firmware) printer."""

    def __init__(self, url: str, api_key: str | None = None, user: str | None = None,
                 password: str | None = None, storage: str = "local",
                 session: aiohttp.ClientSession | None = None,
                 networks: Targets | Networks = ()) -> None:
        """With an API key it is sent as X-Api-Key; else user and password answer Digest
        challenges. With no `session` the client makes its own when first used."""
        headers = {"X-Api-Key": api_key} if api_key else {}
        digest = (user, password) if user and password and not api_key else None
        self._http = HttpPrinter(url, headers, digest=digest, session=session,
                                 networks=networks)
        self._storage = storage
        # The current job as GET /api/v1/job last showed it, by id: status names the job's
        # id, so while the same job prints its file name is known without asking again.
        self._known_job: tuple[int, dict[str, Any]] | None = None

    async def status(self, expect_job: bool = True) -> PrinterStatus:
        """GET /api/v1/status, and /api/v1/job for the file name of a job not seen before."""
        data = await self._http.json("GET", "/api/v1/status")
        printer = data.get("printer")
        if not isinstance(printer, dict) or not isinstance(printer.get("state"), str):
            raise PrinterError("unexpected answer from the printer (no printer.state)")
        raw_state = printer["state"].upper()
        state = STATES.get(raw_state, "error")
        job_id = section(data, "job").get("id")
        if not expect_job and raw_state in ("IDLE", "READY"):
            job = None
        elif isinstance(job_id, int) and self._known_job is not None \
                and self._known_job[0] == job_id:
            job = self._known_job[1]  # a job's file never changes: no need to ask again
        else:
            job = await self._job()
            known = job.get("id") if job is not None else None
            self._known_job = (known, job) if isinstance(known, int) and job else None
        file_name = None
        if job is not None:
            file = section(job, "file")
            # Buddy firmware may give an 8.3 `name`; `display_name` is the name we uploaded
            name = file.get("display_name") or file.get("name")
            file_name = name if isinstance(name, str) else None
        if state == "printing" and job is None:
            state = "idle" if raw_state == "BUSY" else state
        status_job = section(data, "job") or job or {}
        return PrinterStatus(
            state=state,
            nozzle_actual=number(printer.get("temp_nozzle")),
            nozzle_target=number(printer.get("target_nozzle")),
            bed_actual=number(printer.get("temp_bed")),
            bed_target=number(printer.get("target_bed")),
            file_name=file_name,
            progress=number(status_job.get("progress")),
            time_printed=number(status_job.get("time_printing")),
            time_left=number(status_job.get("time_remaining")),
            # the state's name when it is one we know; never the far side's own words
            error=(("PrusaLink reports an error" if raw_state == "ERROR" else
                    "PrusaLink reports an unknown state") if state == "error" else None),
        )

    async def _job(self) -> dict[str, Any] | None:
        response = await self._http.request("GET", "/api/v1/job", ok=(200, 204))
        if response.status == 204 or not response.body:
            return None
        try:
            data = json.loads(response.body)
        except ValueError as exc:
            raise PrinterError("unexpected answer from the printer (job is not JSON)") from exc
        return data if isinstance(data, dict) else None

    async def _job_id(self) -> int:
        job = await self._job()
        if job is None or not isinstance(job.get("id"), int):
            raise PrinterError("the printer has no current job")
        return int(job["id"])

    def _file_path(self, name: str) -> str:
        return f"/api/v1/files/{quote(self._storage)}/{quote(name)}"

    async def upload(self, name: str, data: bytes) -> None:
        """PUT the raw file without Print-After-Upload: only stores it."""
        await self._http.request(
            "PUT", self._file_path(name), ok=(200, 201, 204), data=data,
            headers={"Content-Type": "application/octet-stream", "Overwrite": "?1"},
            timeout=upload_timeout(len(data)))

    async def start(self, name: str) -> None:
        """POST /api/v1/files/{storage}/NAME: start printing it; 409 when busy."""
        await self._http.request("POST", self._file_path(name))

    async def pause(self) -> None:
        """PUT /api/v1/job/{id}/pause."""
        await self._http.request("PUT", f"/api/v1/job/{await self._job_id()}/pause")

    async def resume(self) -> None:
        """PUT /api/v1/job/{id}/resume."""
        await self._http.request("PUT", f"/api/v1/job/{await self._job_id()}/resume")

    async def cancel(self) -> None:
        """DELETE /api/v1/job/{id} (stop)."""
        await self._http.request("DELETE", f"/api/v1/job/{await self._job_id()}")

    async def delete_file(self, name: str) -> None:
        """DELETE the file from the printer's storage; missing is fine."""
        await self._http.request("DELETE", self._file_path(name), ok=(200, 204, 404))

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()
