"""The farm's own story in the log: job state changes, spools charged, printers held.

A listener of the state machine. Every node applies every command, so only the leader (the
node whose workers and writes made the change) logs it: one line per event per cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from mes.state.machine import Outcome

log = logging.getLogger("mes.farm")

# Ops whose value is the job after the change.
_JOB_OPS = ("job.create", "job.set_status", "job.started", "job.start_failed", "job.finished",
            "job.lost", "job.external", "job.claim")


def farm_logger(is_leader: Callable[[], bool]) -> Callable[[Mapping[str, Any], Outcome], None]:
    """A state machine listener that logs the farm's events on the leader."""

    def log_event(command: Mapping[str, Any], outcome: Outcome) -> None:
        op = command.get("op")
        if not outcome.ok or outcome.replayed or not isinstance(outcome.value, dict):
            return
        if op not in _JOB_OPS and op not in ("printer.attention", "printer.bed_cleared"):
            return
        if not is_leader():
            return
        value = outcome.value
        if op in _JOB_OPS:
            printer = value.get("assigned_printer_id") or value.get("printer_id") or "-"
            log.info("job %s is %s (printer %s, %s)", value.get("id"), value.get("status"),
                     printer, op, extra={"job_id": value.get("id"),
                                         "job_status": value.get("status")})
            if op in ("job.finished", "job.set_status") and value.get("status") == "Done":
                log.info("spool %s charged %s g for job %s", value.get("filament_id"),
                         value.get("print_weight_in_grams"), value.get("id"),
                         extra={"filament_id": value.get("filament_id")})
        elif op == "printer.attention":
            log.warning("printer %s held for an operator: %s", value.get("id"),
                        value.get("attention"))
        else:
            log.info("printer %s: bed cleared", value.get("id"))

    return log_event
