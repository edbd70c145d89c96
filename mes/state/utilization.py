"""The utilisation report: hours per printer state, and the jobs that ended, in a window.

Hours come from the printer state intervals apply records (mes.state.intervals), clipped to
the window; an open interval lasts until `now`. Jobs count where they ended: `done`, `failed`
(a running print the farm itself lost: printer error, print gone from the printer) or
`canceled` (by a person, or before it ran; `rejected` counts those of them an operator
refused, so clients of earlier releases read `canceled` as before); grams are the filament
charged for done jobs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, Connection, Float, Select, bindparam, func, literal, select

from mes.state.intervals import UTILIZATION_STATES
from mes.state.job_endings import REJECTED
from mes.state.tables import job_history, print_jobs, printer_state_intervals, printers

JOB_OUTCOMES = ("done", "failed", "rejected", "canceled")
_iv = printer_state_intervals
_start: BindParameter[float] = bindparam("start", type_=Float)
_end: BindParameter[float] = bindparam("end", type_=Float)
_now: BindParameter[float] = bindparam("now", type_=Float)



def _seconds_query(open_intervals: bool) -> Select[Any]:
    """Seconds of each (printer, state) within [start, end): the overlaps of the open (or
    the closed) intervals with it, each found through its own index."""
    ends = _now if open_intervals else _iv.c.ended_at
    overlap = func.min(ends, _end) - func.max(_iv.c.started_at, _start)
    which = _iv.c.ended_at.is_(None) if open_intervals else _iv.c.ended_at > _start
    return (select(_iv.c.printer_id, _iv.c.state,
                   func.sum(func.max(literal(0.0), overlap)).label("seconds"))
            .where(which, _iv.c.started_at < _end)
            .group_by(_iv.c.printer_id, _iv.c.state))


_SECONDS = (_seconds_query(False), _seconds_query(True))

# Jobs that ended within [start, end): a job is Done or Canceled once, its last change.
_ENDED = (
    select(func.coalesce(print_jobs.c.assigned_printer_id, print_jobs.c.printer_id)
           .label("printer_id"), job_history.c.from_status, job_history.c.to_status,
           job_history.c.actor, job_history.c.cause, print_jobs.c.print_weight_in_grams)
    .select_from(job_history.join(print_jobs, print_jobs.c.id == job_history.c.job_id))
    .where(job_history.c.to_status.in_(("Done", "Canceled")), job_history.c.at >= _start,
           job_history.c.at < _end)
)


def _outcome(from_status: str | None, to_status: str, actor: str | None) -> str:
    if to_status == "Done":
        return "done"
    return "failed" if from_status == "Running" and actor is None else "canceled"


def _empty() -> dict[str, Any]:
    return {"seconds": dict.fromkeys(UTILIZATION_STATES, 0.0),
            "jobs": dict.fromkeys(JOB_OUTCOMES, 0), "filament_grams": 0}


def _add(into: dict[str, Any], part: dict[str, Any]) -> None:
    for state, seconds in part["seconds"].items():
        into["seconds"][state] += seconds
    for outcome, count in part["jobs"].items():
        into["jobs"][outcome] += count
    into["filament_grams"] += part["filament_grams"]


def _shown(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures as the API shows them: hours (rounded to the second), ratios, counts."""
    seconds = figures["seconds"]
    tracked = sum(seconds.values())
    return {"hours": {state: round(value / 3600, 6) for state, value in seconds.items()},
            "utilization": round(seconds["printing"] / tracked, 6) if tracked > 0 else None,
            "jobs": dict(figures["jobs"]), "filament_grams": figures["filament_grams"]}


def report(conn: Connection, start: float, end: float, now: float,
           group: str | None = None) -> dict[str, Any]:
    """Per printer, per group and in total: hours in each state, the share printing, jobs
    ended and grams used within [start, end) (with `group`: that group's printers only).

    Printers are grouped by their current `group`; a deleted printer (no group any more)
    still counts in its hours and jobs unless a group is asked for.
    """
    groups: dict[str, str | None] = {
        row.id: row.group for row in conn.execute(select(printers.c.id, printers.c.group))}
    per_printer: dict[str, dict[str, Any]] = {}
    unassigned = _empty()
    window = {"start": start, "end": end, "now": now}
    for query in _SECONDS:
        for printer_id, state, seconds in conn.execute(query, window):
            if state in UTILIZATION_STATES and seconds:
                per_printer.setdefault(printer_id, _empty())["seconds"][state] += float(seconds)
    for printer_id, from_status, to_status, actor, cause, grams in conn.execute(_ENDED,
                                                                              window):
        figures = unassigned if printer_id is None else per_printer.setdefault(
            printer_id, _empty())
        figures["jobs"][_outcome(from_status, to_status, actor)] += 1
        if (cause or "").startswith(REJECTED):  # of the canceled: an operator refused it
            figures["jobs"]["rejected"] += 1
        if to_status == "Done":
            figures["filament_grams"] += int(grams or 0)
    if group is not None:
        per_printer = {pid: f for pid, f in per_printer.items() if groups.get(pid) == group}
        for pid, name in groups.items():
            if name == group:
                per_printer.setdefault(pid, _empty())
    else:
        for pid in groups:
            per_printer.setdefault(pid, _empty())
    by_group: dict[str | None, dict[str, Any]] = {}
    members: dict[str | None, int] = {}
    total = _empty()
    for pid, figures in per_printer.items():
        name = groups.get(pid)
        _add(by_group.setdefault(name, _empty()), figures)
        members[name] = members.get(name, 0) + 1
        _add(total, figures)
    if group is None:
        _add(total, unassigned)
    return {
        "printers": [{"printer_id": pid, "group": groups.get(pid), "exists": pid in groups,
                      **_shown(per_printer[pid])} for pid in sorted(per_printer)],
        "groups": [{"group": name, "printers": members[name], **_shown(by_group[name])}
                   for name in sorted(by_group, key=lambda g: (g is None, g or ""))],
        "total": {"printers": len(per_printer), **_shown(total)},
    }
