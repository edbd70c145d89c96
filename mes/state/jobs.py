"""Print job commands: create and change status, with the Raft3D brief's rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, update

from mes.state import queries, stored_files
from mes.state.args import MISSING, SHA256_PATTERN, Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand, NotFound, RuleViolation
from mes.state.job_endings import REJECTED
from mes.state.prepared import Prepared
from mes.state.tables import filaments, job_history, print_jobs, printers

JOB_STATUSES = ("Queued", "Running", "Done", "Canceled")
# Allowed transitions: target status -> statuses it may come from.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "Running": ("Queued",),
    "Done": ("Running",),
    "Canceled": ("Queued", "Running"),
}


_INSERT_HISTORY = Prepared(insert(job_history))
_INSERT_JOB = Prepared(insert(print_jobs))
_SET_STATUS = Prepared(update(print_jobs).where(print_jobs.c.id == bindparam("job_id"))
                       .values(status=bindparam("status"), updated_at=bindparam("ts")))
_RESERVE = Prepared(update(filaments).where(filaments.c.id == bindparam("filament_id"))
                    .values(reserved_weight_in_grams=filaments.c.reserved_weight_in_grams
                            + bindparam("grams")))
_CHARGE = Prepared(update(filaments).where(filaments.c.id == bindparam("filament_id"))
                   .values(remaining_weight_in_grams=filaments.c.remaining_weight_in_grams
                           - bindparam("grams"), updated_at=bindparam("ts")))


def record_history(ctx: ApplyContext, job_id: str, before: str | None, after: str,
                   cause: str) -> None:
    """Append one status change of a job to its history."""
    _INSERT_HISTORY.run(ctx.conn, {"job_id": job_id, "from_status": before,
                                       "to_status": after, "at": ctx.ts, "cause": cause,
                                       "actor": ctx.actor})
    ctx.transitions.append((job_id, before, after))


JOB_FIELDS = ("id", "printer_id", "filament_id", "filepath", "file_id", "print_weight_in_grams")


def create(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Queue a job if its printer and spool exist and the spool has the weight free.

    The job belongs to `owner_id` (default: the command's actor); with `needs_approval`
    it waits for an operator's approval before the scheduler may send it.
    """
    return create_in(ctx, args, None)


def create_owned(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 4 of `create`: a user's job prints only a file they may use (see
    `stored_files.may_use_file`); another's file is not found, as a missing one."""
    return create_in(ctx, args, None, owned_files=True)


def create_named(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Level 7 of `create`: as level 4, and a job that names only a file takes the name its
    owner gave the file (the stored name when they never uploaded it themselves)."""
    return create_in(ctx, args, None, owned_files=True, own_names=True)


def create_in(ctx: ApplyContext, args: Args, order_id: str | None,
              owned_files: bool = False, own_names: bool = False) -> dict[str, Any]:
    """Queue one job (of an order when `order_id` is set); see `create`. With `owned_files`
    (level 4), a user who is not staff may name only a file they may use; with `own_names`
    (level 7), a job naming only a file takes its owner's name for it."""
    if args.has("status"):
        raise InvalidCommand("status_not_allowed", "status cannot be set when creating a job",
                             "status")
    args.reject_unknown((*JOB_FIELDS, "owner_id", "needs_approval"))
    owner_id = args.ident("owner_id", required=False) or ctx.actor
    needs_approval = args.flag("needs_approval", required=False) is True
    job_id = args.ident("id")
    printer_id = args.ident("printer_id", required=False)
    filament_id = args.ident("filament_id")
    file_id = args.pattern("file_id", SHA256_PATTERN, "the SHA-256 of a stored file")
    filepath = args.text("filepath", 1024, required=file_id in (None, MISSING))
    weight = args.grams("print_weight_in_grams", 1)
    assert job_id and filament_id
    if queries.get_job(ctx.conn, job_id) is not None:
        raise RuleViolation("already_exists", f"print job {job_id!r} already exists", "id")
    if printer_id is not None and queries.get_printer(ctx.conn, printer_id) is None:
        raise NotFound("printer_not_found", f"printer {printer_id!r} does not exist", "printer_id")
    if file_id not in (None, MISSING):
        stored = queries.get_file(ctx.conn, file_id)
        if stored is not None and owned_files and not ctx.staff and ctx.actor is not None \
                and not stored_files.may_use_file(ctx.conn, ctx.actor, file_id):
            stored = None
        if stored is None:
            raise NotFound("file_not_found", f"file {file_id!r} is not stored", "file_id")
        if filepath is MISSING:
            own = stored_files.name_for(ctx.conn, owner_id, file_id) if own_names else None
            filepath = own or stored["name"]
    else:
        file_id = None
    if not filepath.strip():
        raise InvalidCommand("empty_field", "filepath must not be empty", "filepath")
    spool = queries.get_filament(ctx.conn, filament_id)
    if spool is None:
        raise NotFound("filament_not_found", f"filament {filament_id!r} does not exist",
                       "filament_id")
    available = spool["remaining_weight_in_grams"] - spool["reserved_weight_in_grams"]
    if weight > available:
        raise RuleViolation(
            "insufficient_filament",
            f"print weight {weight} g exceeds the {available} g available on filament "
            f"{filament_id!r} ({spool['remaining_weight_in_grams']} g remaining, "
            f"{spool['reserved_weight_in_grams']} g reserved by queued and running jobs)",
            "print_weight_in_grams",
        )
    row = {"id": job_id, "printer_id": printer_id, "filament_id": filament_id,
           "filepath": filepath, "file_id": file_id, "print_weight_in_grams": weight,
           "status": "Queued", "assigned_printer_id": None, "printer_filename": None,
           "phase": None, "claim_epoch": None, "claimed_at": None, "requested_action": None,
           "from_server": True, "last_error": None, "owner_id": owner_id,
           "order_id": order_id, "approval": "pending" if needs_approval else None,
           "created_at": ctx.ts, "updated_at": ctx.ts}
    _INSERT_JOB.run(ctx.conn, row)
    _reserve(ctx, filament_id, weight)
    record_history(ctx, job_id, None, "Queued",
                   "created; awaiting approval" if needs_approval else "created")
    ctx.changed("print_job", job_id, "created")
    ctx.changed("filament", filament_id, "updated")
    return row


def set_status(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Move a job along Queued -> Running -> Done, or to Canceled; Done charges the spool."""
    args.reject_unknown(("id", "status", "cause"))
    job_id = args.ident("id")
    target = args.choice("status", JOB_STATUSES)
    cause = args.text("cause", 500, required=False)
    assert job_id is not None
    job = queries.get_job(ctx.conn, job_id)
    if job is None:
        raise NotFound("job_not_found", f"print job {job_id!r} does not exist", "id")
    current = job["status"]
    if current not in TRANSITIONS.get(target, ()):
        raise RuleViolation("invalid_transition",
                            f"a {current} job cannot become {target}", "status")
    cause = cause if isinstance(cause, str) else "api"
    if target == "Running" and job["phase"] == "starting":
        raise RuleViolation("worker_starting", f"job {job_id!r} is being started on printer "
                            f"{job['assigned_printer_id']!r} by its worker", "status")
    if target == "Running":
        _SET_STATUS.run(ctx.conn, {"job_id": job_id, "status": target, "ts": ctx.ts})
        record_history(ctx, job_id, current, target, cause)
        ctx.changed("print_job", job_id, "updated")
    else:
        end_job(ctx, job, target, cause)
    changed = queries.get_job(ctx.conn, job_id)
    assert changed is not None
    return changed


def end_job(ctx: ApplyContext, job: dict[str, Any], status: str, cause: str) -> None:
    """Make a job Done or Canceled: release its reservation, charge the spool when Done,
    and hold its printer until the bed is cleared if it was printing there."""
    _SET_STATUS.run(ctx.conn, {"job_id": job["id"], "status": status, "ts": ctx.ts})
    ctx.conn.execute(update(print_jobs).where(print_jobs.c.id == job["id"])
                     .values(phase=None, requested_action=None))
    if job["filament_id"] is not None:
        _reserve(ctx, job["filament_id"], -job["print_weight_in_grams"])
        if status == "Done":
            _CHARGE.run(ctx.conn, {"filament_id": job["filament_id"],
                                       "grams": job["print_weight_in_grams"], "ts": ctx.ts})
        ctx.changed("filament", job["filament_id"], "updated")
    if job["assigned_printer_id"] is not None and job["status"] == "Running":
        ctx.conn.execute(update(printers).where(printers.c.id == job["assigned_printer_id"])
                         .values(bed_clear=False, updated_at=ctx.ts))
        ctx.changed("printer", job["assigned_printer_id"], "updated")
    record_history(ctx, job["id"], job["status"], status, cause)
    ctx.changed("print_job", job["id"], "updated")


def _reserve(ctx: ApplyContext, filament_id: str, grams: int) -> None:
    _RESERVE.run(ctx.conn, {"filament_id": filament_id, "grams": grams})


def _pending(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    job_id = args.ident("id")
    job = queries.get_job(ctx.conn, job_id or "")
    if job is None:
        raise NotFound("job_not_found", f"print job {job_id!r} does not exist", "id")
    if job["status"] != "Queued" or job["approval"] != "pending":
        raise RuleViolation("not_awaiting_approval",
                            f"print job {job_id!r} is not waiting for approval", "id")
    return job


def approve(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Let a job that waits for approval be scheduled (operators)."""
    args.reject_unknown(("id",))
    job = _pending(ctx, args)
    ctx.conn.execute(update(print_jobs).where(print_jobs.c.id == job["id"])
                     .values(approval="approved", updated_at=ctx.ts))
    record_history(ctx, job["id"], "Queued", "Queued", "approved")
    ctx.changed("print_job", job["id"], "updated")
    changed = queries.get_job(ctx.conn, job["id"])
    assert changed is not None
    return changed


def reject(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Refuse a job that waits for approval: it is canceled with the reason (operators)."""
    args.reject_unknown(("id", "reason"))
    job = _pending(ctx, args)
    reason = args.text("reason", 500)
    if not reason.strip():
        raise InvalidCommand("empty_field", "a rejection needs a reason", "reason")
    ctx.conn.execute(update(print_jobs).where(print_jobs.c.id == job["id"])
                     .values(approval="rejected"))
    end_job(ctx, job, "Canceled", f"{REJECTED}{reason}")
    changed = queries.get_job(ctx.conn, job["id"])
    assert changed is not None
    return changed
