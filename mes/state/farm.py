"""Commands of the printer workers and printer control: claims, telemetry, beds.

Every command a worker sends carries its printer's id and assignment epoch; apply rejects
any other epoch (mes/state/shards.py `fence`), so a node that lost a printer can never
change that printer's state again. The leader's epoch (`leader.begin`) fences the leader's
own plans (shard.assign).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from mes.state import queries
from mes.state.args import MISSING, Args
from mes.state.context import ApplyContext
from mes.state.errors import DomainError, InvalidCommand, NotFound, RuleViolation
from mes.state.intervals import record_states
from mes.state.job_endings import LOST
from mes.state.jobs import end_job, record_history
from mes.state.prepared import Prepared
from mes.state.shards import fence
from mes.state.tables import leadership, print_jobs, printer_status, printers

_PRINTER_KNOWN = Prepared(select(printers.c.id).where(printers.c.id == bindparam("id")))
_FORGET_STATUS = Prepared(delete(printer_status).where(
    printer_status.c.printer_id == bindparam("id")))
_INSERT_STATUS = Prepared(insert(printer_status))

PRINTER_STATES = ("offline", "idle", "printing", "paused", "finished", "error")
MAX_EPOCH = 2**62


def begin_epoch(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """A node became leader: the next epoch is its own."""
    args.reject_unknown(("leader",))
    leader = args.text("leader", 300)
    row = ctx.conn.execute(select(leadership)).first()
    epoch = 1 if row is None else row.epoch + 1
    ctx.conn.execute(delete(leadership))
    ctx.conn.execute(insert(leadership).values(id=1, epoch=epoch, leader=leader, since=ctx.ts))
    return {"epoch": epoch, "leader": leader}


def current_epoch(ctx: ApplyContext) -> int:
    """The epoch of the current leader (0 before any leader began one)."""
    value = ctx.conn.execute(select(leadership.c.epoch)).scalar()
    return int(value or 0)


def _fenced(ctx: ApplyContext, args: Args, name: str = "printer_id") -> str:
    """The worker's printer id, after checking its assignment epoch is current."""
    printer_id = args.ident(name)
    fence(ctx, printer_id, args.raw("epoch"))
    assert printer_id is not None
    return printer_id


def _job_here(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The job of a worker's command, which must be on the worker's printer."""
    printer_id = _fenced(ctx, args)
    job = _job(ctx, args.ident("job_id"))
    if job["assigned_printer_id"] != printer_id:
        raise RuleViolation("wrong_printer", f"job {job['id']!r} is not on printer "
                            f"{printer_id!r}", "printer_id")
    return job


def _job(ctx: ApplyContext, job_id: str | None) -> dict[str, Any]:
    job = queries.get_job(ctx.conn, job_id) if job_id else None
    if job is None:
        raise NotFound("job_not_found", f"print job {job_id!r} does not exist", "job_id")
    return job


def _printer(ctx: ApplyContext, printer_id: str | None) -> dict[str, Any]:
    printer = queries.get_printer(ctx.conn, printer_id) if printer_id else None
    if printer is None:
        raise NotFound("printer_not_found", f"printer {printer_id!r} does not exist",
                       "printer_id")
    return printer


def _set_job(ctx: ApplyContext, job_id: str, **values: Any) -> None:
    ctx.conn.execute(update(print_jobs).where(print_jobs.c.id == job_id)
                     .values(updated_at=ctx.ts, **values))
    ctx.changed("print_job", job_id, "updated")


def _set_printer(ctx: ApplyContext, printer_id: str, **values: Any) -> None:
    ctx.conn.execute(update(printers).where(printers.c.id == printer_id)
                     .values(updated_at=ctx.ts, **values))
    ctx.changed("printer", printer_id, "updated")


def claim(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Assign a queued job to an idle printer before anything is sent to the printer."""
    args.reject_unknown(("epoch", "job_id", "printer_id", "printer_filename"))
    printer = _printer(ctx, _fenced(ctx, args))
    job = _job(ctx, args.ident("job_id"))
    filename = args.text("printer_filename", 255)
    if job["status"] != "Queued" or job["phase"] is not None:
        raise RuleViolation("not_claimable", f"job {job['id']!r} is not waiting", "job_id")
    if job["approval"] == "pending":
        raise RuleViolation("awaiting_approval", f"job {job['id']!r} waits for approval",
                            "job_id")
    if job["file_id"] is None:
        raise RuleViolation("no_file", f"job {job['id']!r} has no stored G-code file", "job_id")
    if job["printer_id"] not in (None, printer["id"]):
        raise RuleViolation("wrong_printer", f"job {job['id']!r} asked for another printer",
                            "printer_id")
    if job["printer_id"] is None and printer["filament_id"] != job["filament_id"]:
        raise RuleViolation("wrong_spool", f"printer {printer['id']!r} has another spool loaded",
                            "printer_id")
    if not printer["bed_clear"]:
        raise RuleViolation("bed_not_clear", f"printer {printer['id']!r} waits for its bed to "
                            "be cleared", "printer_id")
    if is_reserved(printer, ctx.ts):
        raise RuleViolation("reserved", f"printer {printer['id']!r} is reserved by "
                            f"{printer['reserved_by']!r}", "printer_id")
    busy = queries.active_job_on(ctx.conn, printer["id"])
    if busy is not None:
        raise RuleViolation("printer_busy", f"printer {printer['id']!r} has job {busy['id']!r}",
                            "printer_id")
    _set_job(ctx, job["id"], assigned_printer_id=printer["id"], printer_filename=filename,
             phase="starting", last_error=None, claim_epoch=args.raw("epoch"),
             claimed_at=ctx.ts)
    return _read_job(ctx, job["id"])


def is_reserved(printer: dict[str, Any], now: float) -> bool:
    """Whether a reservation holds the printer at time `now`."""
    until = printer.get("reserved_until")
    return bool(printer.get("reserved_by")) and until is not None and until > now


def started(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The printer was seen printing a claimed job: it is Running."""
    args.reject_unknown(("epoch", "job_id", "printer_id"))
    job = _job_here(ctx, args)
    if job["status"] != "Queued" or job["phase"] != "starting":
        raise RuleViolation("not_starting", f"job {job['id']!r} is not starting", "job_id")
    _set_job(ctx, job["id"], status="Running", phase="printing")
    record_history(ctx, job["id"], "Queued", "Running",
                   f"printer {job['assigned_printer_id']} started printing")
    return _read_job(ctx, job["id"])


def sending(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """A worker is about to send a claimed job's start. Changes nothing; refused unless the
    job is still claimed for that printer and the epoch is current, so a deposed leader or a
    stale view sends no start."""
    args.reject_unknown(("epoch", "job_id", "printer_id"))
    printer_id = _fenced(ctx, args)
    job = _job(ctx, args.ident("job_id"))
    if (job["status"], job["phase"], job["assigned_printer_id"]) != (
            "Queued", "starting", printer_id):
        raise RuleViolation("not_starting", f"job {job['id']!r} is not starting on printer "
                            f"{printer_id!r}", "job_id")
    return {"job_id": job["id"], "printer_id": printer_id}


def start_failed(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """A claimed job could not be started: it waits in the queue again, with the reason."""
    args.reject_unknown(("epoch", "job_id", "printer_id", "reason"))
    job = _job_here(ctx, args)
    reason = args.text("reason", 1000)
    if job["status"] != "Queued" or job["phase"] != "starting":
        raise RuleViolation("not_starting", f"job {job['id']!r} is not starting", "job_id")
    _set_job(ctx, job["id"], assigned_printer_id=None, printer_filename=None, phase=None,
             last_error=reason, claim_epoch=None, claimed_at=None)
    return _read_job(ctx, job["id"])


def finished(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The printer finished the job: Done, spool charged, bed to be cleared."""
    args.reject_unknown(("epoch", "job_id", "printer_id"))
    return _end_running(ctx, args, "Done", lambda job: (
        f"printer {job['assigned_printer_id']} finished the print"))


def lost(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The printer no longer prints a running job it never finished: Canceled, with the cause."""
    args.reject_unknown(("epoch", "job_id", "printer_id", "cause"))
    return _end_running(ctx, args, "Canceled",
                        lambda job: f"{LOST}{args.text('cause', 1000)}")


def _end_running(ctx: ApplyContext, args: Args, status: str,
                 cause: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    job = _job_here(ctx, args)
    if job["status"] != "Running":
        raise RuleViolation("not_running", f"job {job['id']!r} is not running", "job_id")
    end_job(ctx, job, status, cause(job))
    return _read_job(ctx, job["id"])


def set_phase(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The printer paused or resumed a running job (at the printer or on request)."""
    args.reject_unknown(("epoch", "job_id", "printer_id", "phase"))
    job = _job_here(ctx, args)
    phase = args.choice("phase", ("printing", "paused"))
    if job["status"] != "Running":
        raise RuleViolation("not_running", f"job {job['id']!r} is not running", "job_id")
    requested = job["requested_action"]
    done = (requested == "pause" and phase == "paused") or (
        requested == "resume" and phase == "printing")
    _set_job(ctx, job["id"], phase=phase, requested_action=None if done else requested)
    return _read_job(ctx, job["id"])


def external(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """A print started at the printer itself: record it as a job not from the server."""
    args.reject_unknown(("epoch", "job_id", "printer_id", "file_name"))
    printer = _printer(ctx, _fenced(ctx, args))
    job_id = args.ident("job_id")
    name = args.text("file_name", 255)
    assert job_id is not None
    if queries.get_job(ctx.conn, job_id) is not None:
        raise RuleViolation("already_exists", f"print job {job_id!r} already exists", "job_id")
    busy = queries.active_job_on(ctx.conn, printer["id"])
    if busy is not None:
        raise RuleViolation("printer_busy", f"printer {printer['id']!r} has job {busy['id']!r}",
                            "printer_id")
    ctx.conn.execute(insert(print_jobs).values(
        id=job_id, printer_id=printer["id"], filament_id=printer["filament_id"],
        filepath=name, file_id=None, print_weight_in_grams=0, status="Running",
        assigned_printer_id=printer["id"], printer_filename=name, phase="printing",
        from_server=False, created_at=ctx.ts, updated_at=ctx.ts))
    record_history(ctx, job_id, None, "Running", f"started at printer {printer['id']}")
    ctx.changed("print_job", job_id, "created")
    return _read_job(ctx, job_id)


def request_action(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Ask the worker to pause or resume a running job at its printer."""
    args.reject_unknown(("id", "action"))
    job = _job(ctx, args.ident("id"))
    action = args.choice("action", ("pause", "resume"))
    if job["status"] != "Running" or job["assigned_printer_id"] is None:
        raise RuleViolation("not_running", f"job {job['id']!r} is not printing on a printer",
                            "id")
    if action == "pause" and job["phase"] == "paused":
        raise RuleViolation("already_paused", f"job {job['id']!r} is already paused", "id")
    if action == "resume" and job["phase"] != "paused":
        raise RuleViolation("not_paused", f"job {job['id']!r} is not paused", "id")
    _set_job(ctx, job["id"], requested_action=action)
    return _read_job(ctx, job["id"])


def bed_cleared(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Someone (or the automatic option) took the finished print off the bed."""
    args.reject_unknown(("id", "epoch"))
    if args.has("epoch"):
        _fenced(ctx, args, "id")
    printer = _printer(ctx, args.ident("id"))
    busy = queries.active_job_on(ctx.conn, printer["id"])
    if busy is not None:
        raise RuleViolation("printer_busy", f"printer {printer['id']!r} is printing job "
                            f"{busy['id']!r}", "id")
    if args.has("epoch") and printer["attention"]:
        raise RuleViolation("needs_attention", f"printer {printer['id']!r} needs an operator: "
                            f"{printer['attention']}", "id")
    _set_printer(ctx, printer["id"], bed_clear=True, attention=None)
    record_states(ctx, [printer["id"]])
    return _read_printer(ctx, printer["id"])


def needs_attention(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """A worker cancelled a print the printer should not have started: hold the printer
    until an operator clears its bed (only the operator's bed_cleared clears this)."""
    args.reject_unknown(("epoch", "id", "reason"))
    _fenced(ctx, args, "id")
    printer = _printer(ctx, args.ident("id"))
    reason = args.text("reason", 1000)
    _set_printer(ctx, printer["id"], bed_clear=False, attention=reason)
    record_states(ctx, [printer["id"]])
    return _read_printer(ctx, printer["id"])


def reserve(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Reserve a printer for a holder until a time; the scheduler skips it meanwhile."""
    args.reject_unknown(("id", "holder", "until"))
    printer = _printer(ctx, args.ident("id"))
    holder = args.text("holder", 200)
    until = args.number("until", 0, 1e12)
    if not holder.strip():
        raise InvalidCommand("empty_field", "holder must not be empty", "holder")
    if until <= ctx.ts:
        raise InvalidCommand("in_the_past", "the reservation must end in the future", "until")
    if is_reserved(printer, ctx.ts) and printer["reserved_by"] != holder:
        raise RuleViolation("reserved", f"printer {printer['id']!r} is reserved by "
                            f"{printer['reserved_by']!r}", "id")
    _set_printer(ctx, printer["id"], reserved_by=holder, reserved_until=until)
    return _read_printer(ctx, printer["id"])


def release(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """End a printer's reservation."""
    args.reject_unknown(("id",))
    printer = _printer(ctx, args.ident("id"))
    if not is_reserved(printer, ctx.ts):
        raise NotFound("not_reserved", f"printer {printer['id']!r} is not reserved", "id")
    _set_printer(ctx, printer["id"], reserved_by=None, reserved_until=None)
    return _read_printer(ctx, printer["id"])


STATUS_FIELDS = ("nozzle_actual", "nozzle_target", "bed_actual", "bed_target", "progress",
                 "time_printed", "time_left")


def telemetry(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Overwrite the last seen status of the printers whose status changed this tick.

    Each status carries its printer's assignment epoch; a stale one is skipped and listed
    in `stale` (its worker stops), the others are written."""
    args.reject_unknown(("statuses",))
    statuses = args.raw("statuses")
    if not isinstance(statuses, list) or len(statuses) > 10_000:
        raise InvalidCommand("invalid_statuses", "statuses must be a list", "statuses")
    rows: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    for raw in statuses:
        try:  # one unreadable status must not keep every other printer's from being written
            item = Args(raw)
            row = _status_row(item)
        except InvalidCommand:
            continue
        try:
            fence(ctx, row["printer_id"], item.raw("epoch"))
        except DomainError:
            stale.append(row["printer_id"])
            continue
        rows[row["printer_id"]] = row
    if len(rows) <= queries.FEW:
        known = {r.id for r in _PRINTER_KNOWN.each(ctx.conn, rows)}
    else:
        known = set(ctx.conn.execute(select(printers.c.id)).scalars())
    rows = {pid: r for pid, r in rows.items() if pid in known}
    if rows:
        ids = sorted(rows)
        if len(ids) <= queries.FEW:
            _FORGET_STATUS.run_many(ctx.conn, [{"id": pid} for pid in ids])
        else:
            ctx.conn.execute(delete(printer_status).where(printer_status.c.printer_id.in_(ids)))
        _INSERT_STATUS.run_many(ctx.conn, [rows[pid] for pid in ids])
        for printer_id in ids:
            ctx.changed("printer_status", printer_id, "updated")
        record_states(ctx, ids)
    return {"written": len(rows), "stale": sorted(set(stale))}


def _status_row(item: Args) -> dict[str, Any]:
    item.reject_unknown(("printer_id", "epoch", "state", "file_name", "error", "observed_at",
                         *STATUS_FIELDS))
    row: dict[str, Any] = {"printer_id": item.ident("printer_id"),
                           "state": item.choice("state", PRINTER_STATES),
                           "file_name": item.text("file_name", 255, required=False,
                                                  nullable=True),
                           "error": item.text("error", 2000, required=False, nullable=True),
                           "observed_at": item.number("observed_at", 0, 1e12)}
    for name in STATUS_FIELDS:
        row[name] = item.number(name, -1000, 1e9, required=False, nullable=True)
    return {k: (None if v is MISSING else v) for k, v in row.items()}


def _read_job(ctx: ApplyContext, job_id: str) -> dict[str, Any]:
    job = queries.get_job(ctx.conn, job_id)
    assert job is not None
    return job


def _read_printer(ctx: ApplyContext, printer_id: str) -> dict[str, Any]:
    printer = queries.get_printer(ctx.conn, printer_id)
    assert printer is not None
    return printer
