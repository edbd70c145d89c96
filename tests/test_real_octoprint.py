"""Smoke tests of the real-OctoPrint harness, with plain httpx against its REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.polling import wait_for
from tests.real_octoprint import (
    OctoPrintServer,
    write_gcode,
)


def upload(client: httpx.Client, path: Path, print_: bool = True) -> dict[str, Any]:
    """POST /api/files/local with multipart `file` and `print`; expects 201."""
    response = client.post("/api/files/local",
                           files={"file": (path.name, path.read_bytes(), "text/x.gcode")},
                           data={"print": "true" if print_ else "false"})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def job_in(server: OctoPrintServer, state: str) -> dict[str, Any] | None:
    """The job if its state is `state`, else None."""
    job = server.job()
    return job if job["state"] == state else None


def test_short_print_completes(octoprint: OctoPrintServer, tmp_path: Path) -> None:
    gcode = write_gcode(tmp_path / "short.gcode", 2)
    assert upload(octoprint.client, gcode)["effectivePrint"] is True

    job = wait_for(lambda: job_in(octoprint, "Printing"), 10, "the print to start")
    assert job["job"]["file"]["name"] == "short.gcode"
    done = wait_for(
        lambda: (j := job_in(octoprint, "Operational")) and j["progress"]["completion"] == 100,
        30, "the print to finish")
    assert done

    def last_print() -> dict[str, Any] | None:
        info = octoprint.client.get("/api/files/local/short.gcode").json()
        last: dict[str, Any] | None = info.get("prints", {}).get("last")
        return last

    assert wait_for(last_print, 10, "the print to be recorded")["success"] is True
    assert octoprint.client.delete("/api/files/local/short.gcode").status_code == 204


def test_cancel_and_busy_upload(octoprint: OctoPrintServer, tmp_path: Path) -> None:
    long = write_gcode(tmp_path / "long.gcode", 20)
    assert upload(octoprint.client, long)["effectivePrint"] is True
    wait_for(lambda: job_in(octoprint, "Printing"), 10, "the print to start")

    other = write_gcode(tmp_path / "other.gcode", 2)
    assert upload(octoprint.client, other)["effectivePrint"] is False
    assert octoprint.job()["job"]["file"]["name"] == "long.gcode"

    response = octoprint.client.post("/api/job", json={"command": "cancel"})
    assert response.status_code == 204, response.text
    wait_for(
        lambda: (j := job_in(octoprint, "Operational")) and j["progress"]["completion"] is None,
        15, "the print to be cancelled")
