"""Why a job waits: a code a program can read and a sentence a person can.

Pure functions over what the API already read (the job, the printers, their statuses and
their active jobs); nothing here changes state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mes.state.printers import drivable

# Printer errors that mean our credentials are refused.
_KEY_REFUSED = ("401", "403", "unauthor", "forbidden", "api key", "invalid key")


@dataclass(frozen=True)
class Hold:
    """One reason a job is not printing now."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The reason as plain data."""
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class FarmView:
    """What deciding a hold needs, read once for a page of jobs."""

    printers: Mapping[str, Mapping[str, Any]]
    statuses: Mapping[str, Mapping[str, Any]]
    busy: Mapping[str, str]  # printer id -> the active job on it
    now: float


def hold_of(job: Mapping[str, Any], farm: FarmView) -> Hold | None:
    """Why `job` waits, or None when it is printing or will be sent at the next chance."""
    if job["status"] == "Running":
        if job.get("phase") == "paused" or job.get("requested_action") == "pause":
            return Hold("paused", "the print is paused; resume it to continue")
        return None
    if job["status"] != "Queued":
        return None
    if job.get("approval") == "pending":
        return Hold("awaiting_approval", "waits for an operator to approve it")
    if job.get("file_id") is None:
        return Hold("record_only", "it has no G-code file, so it is only a record and is "
                    "never sent to a printer")
    if job.get("assigned_printer_id"):
        return Hold("starting", f"being started on printer {job['assigned_printer_id']!r}")
    pinned = job.get("printer_id")
    if pinned:
        printer = farm.printers.get(pinned)
        if printer is None:
            return Hold("printer_not_found", f"printer {pinned!r} does not exist")
        return _printer_hold(printer, farm) or _failed(job)
    spool = job.get("filament_id")
    candidates = [p for p in farm.printers.values()
                  if p.get("filament_id") == spool and p.get("worker")]
    if not candidates:
        loaded = [p["id"] for p in farm.printers.values() if p.get("filament_id") == spool]
        if loaded:
            return Hold("no_driven_printer", f"spool {spool!r} is loaded only in printers the "
                        f"farm does not drive ({', '.join(sorted(loaded)[:5])}): let the farm "
                        "drive one of them")
        return Hold("no_printer_for_spool", f"no printer has spool {spool!r} loaded: load it "
                    "in a printer, or choose a printer for the job")
    holds = [_printer_hold(p, farm) for p in sorted(candidates, key=lambda p: p["id"])]
    if any(h is None for h in holds):
        return _failed(job)
    first = next(h for h in holds if h is not None)
    if len(candidates) == 1:
        return first
    return Hold("no_printer_ready", f"none of the {len(candidates)} printers with spool "
                f"{spool!r} can take it now; first: {first.message}")


def _failed(job: Mapping[str, Any]) -> Hold | None:
    if job.get("last_error"):
        return Hold("last_start_failed", f"last start failed: {job['last_error']}; it is "
                    "retried")
    return None


def _printer_hold(printer: Mapping[str, Any], farm: FarmView) -> Hold | None:
    """Why this printer cannot take a job now, or None."""
    name = printer["id"]
    if not printer.get("worker"):
        hint = ("let the farm drive it" if drivable(dict(printer))
                else "give it an address and a kind so that the farm can drive it")
        return Hold("printer_not_driven", f"printer {name!r} is only a record, not driven by "
                    f"the farm: {hint}")
    if printer.get("drive_state") == "unreachable":
        return Hold("printer_unreachable", f"printer {name!r} is driven only by server "
                    f"{printer.get('hub')}, which is down: it waits until that server is back")
    if printer.get("attention"):
        return Hold("printer_needs_attention", f"printer {name!r} needs an operator: "
                    f"{printer['attention']}; clear its bed when done")
    until = printer.get("reserved_until")
    if printer.get("reserved_by") and until is not None and until > farm.now:
        return Hold("printer_reserved", f"printer {name!r} is reserved by "
                    f"{printer['reserved_by']!r} for {int(until - farm.now)} s more")
    status = farm.statuses.get(name)
    state = status.get("state") if status else None
    error = (status or {}).get("error") or ""
    if state == "offline":
        if any(word in error.lower() for word in _KEY_REFUSED):
            return Hold("printer_refuses_key", f"printer {name!r} refuses our API key: {error}")
        detail = f": {error}" if error else ""
        return Hold("printer_offline", f"printer {name!r} is offline{detail}")
    if state == "error":
        return Hold("printer_error", f"printer {name!r} reports an error: {error or 'unknown'}")
    busy = farm.busy.get(name)
    if busy:
        return Hold("printer_busy", f"printer {name!r} is busy with job {busy!r}")
    if not printer.get("bed_clear", True):
        return Hold("bed_not_cleared", f"the bed of printer {name!r} must be cleared: take "
                    "the last print off, then mark the bed clear")
    if status is None:
        return Hold("printer_not_seen", f"the farm has not reached printer {name!r} yet")
    return None
