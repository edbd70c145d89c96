"""Who may apply which command: checked inside apply against the replicated users table.

The edge checks the same rules first (and answers 401/403 fast); this check makes the state
machine refuse a command whose actor lost the right in between (disabled, demoted), and any
command the edge should never have built.
"""

from __future__ import annotations

from mes.state import queries
from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import Forbidden, NotFound
from mes.state.users import RANK, get_user

# The least role whose requests may carry each command; commands missing here are the
# farm's own (workers, the leader) and no user's request may carry them.
MIN_ROLE = {
    "printer.create": "operator", "printer.update": "operator", "printer.delete": "operator",
    "printer.bed_cleared": "operator", "printer.reserve": "operator",
    "printer.release": "operator",
    "filament.create": "operator", "filament.update": "operator", "filament.delete": "operator",
    "job.approve": "operator", "job.reject": "operator",
    "job.create": "user", "order.create": "user", "job.set_status": "user",
    "job.request": "user", "file.register": "user",
    "user.create": "admin", "user.update": "user",
    "token.create": "user", "token.revoke": "user",
    "node.forget": "admin", "retention.prune": "admin",
    "webhook.create": "operator", "webhook.delete": "operator",
}
# Commands on one job that a user may carry only for their own jobs.
_OWN_JOB_OPS = ("job.set_status", "job.request")


def check(ctx: ApplyContext, op: str, args: Args) -> None:
    """Raise Forbidden (or NotFound for another user's job) unless the actor may do this.

    Sets `ctx.actor_role` from the state: the role at apply time is what counts.
    """
    if ctx.actor is None:
        return
    user = get_user(ctx.conn, ctx.actor)
    if user is None or user["disabled"]:
        raise Forbidden("account_disabled", "this account is disabled or no longer exists")
    ctx.actor_role = user["role"]
    need = MIN_ROLE.get(op)
    if need is None or RANK[user["role"]] < RANK[need]:
        raise Forbidden("forbidden", f"the {user['role']} role may not do this")
    if ctx.staff:
        return
    if op in _OWN_JOB_OPS:
        job_id = args.raw("id")
        job = queries.get_job(ctx.conn, job_id) if isinstance(job_id, str) else None
        if job is not None and job["owner_id"] != ctx.actor:
            raise NotFound("job_not_found", f"print job {job_id!r} does not exist", "id")
        if op == "job.set_status" and str(args.raw("status")).lower() != "canceled":
            raise Forbidden("forbidden", "users may only cancel their jobs", "status")
    if op in ("job.create", "order.create") and args.raw("owner_id") not in (None, ctx.actor):
        raise Forbidden("forbidden", "users submit jobs only in their own name", "owner_id")
