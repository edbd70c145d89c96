"""The farm's own story in the log: job state changes, spools charged, printers held.

A listener of the state machine. Every node applies every command, so only the leader (the
node whose workers and writes made the change) logs it: one line per event per cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from mes.state.machine import Outcome
from mes.state.ops import Op

log = logging.getLogger("mes.farm")

# Ops whose value is the job after the change.
_JOB_OPS = (Op.JOB_CREATE, Op.JOB_SET_STATUS, Op.JOB_STARTED, Op.JOB_START_FAILED, Op.JOB_FINISHED,
            Op.JOB_LOST, Op.JOB_EXTERNAL, Op.JOB_CLAIM)


def farm_logger(is_leader: Callable[[], bool]) -> Callable[[Mapping[str, Any], Outcome], None]:
    """A state machine listener that logs the farm's events on the leader."""

    def log_event(command: Mapping[str, Any], outcome: Outcome) -> None:
        op = command.get("op")
        if not outcome.ok or outcome.replayed or not isinstance(outcome.value, dict):
            return
        if op not in _JOB_OPS and op not in (Op.PRINTER_ATTENTION, Op.PRINTER_BED_CLEARED):
            return
        if not is_leader():
            return
        value = outcome.value
        if op in _JOB_OPS:
            printer = value.get("assigned_printer_id") or value.get("printer_id") or "-"
            log.info("job %s is %s (printer %s, %s)", value.get("id"), value.get("status"),
                     printer, op, extra={"job_id": value.get("id"),
                                         "job_status": value.get("status")})
            if op in (Op.JOB_FINISHED, Op.JOB_SET_STATUS) and value.get("status") == "Done":
                log.info("spool %s charged %s g for job %s", value.get("filament_id"),
                         value.get("print_weight_in_grams"), value.get("id"),
                         extra={"filament_id": value.get("filament_id")})
        elif op == Op.PRINTER_ATTENTION:
            log.warning("printer %s held for an operator: %s", value.get("id"),
                        value.get("attention"))
        else:
            log.info("printer %s: bed cleared", value.get("id"))

    return log_event
