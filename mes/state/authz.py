"""Who may apply which command: checked inside apply against the replicated users table.

The edge checks the same rules first (and answers 401/403 fast); this check makes the state
machine refuse a command whose actor lost the right in between (disabled, demoted), and any
command the edge should never have built.
"""

from __future__ import annotations

from mes.state import commands, queries
from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import Forbidden, NotFound
from mes.state.users import RANK, get_user

# Commands on one job that a user may carry only for their own jobs.
_OWN_JOB_OPS = (commands.Op.JOB_SET_STATUS, commands.Op.JOB_REQUEST)


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
    need = commands.min_role(op)
    if need is None or RANK[user["role"]] < RANK[need]:
        raise Forbidden("forbidden", f"the {user['role']} role may not do this")
    if ctx.staff:
        return
    if op in _OWN_JOB_OPS:
        job_id = args.raw("id")
        job = queries.get_job(ctx.conn, job_id) if isinstance(job_id, str) else None
        if job is not None and job["owner_id"] != ctx.actor:
            raise NotFound("job_not_found", f"print job {job_id!r} does not exist", "id")
        if op == commands.Op.JOB_SET_STATUS and str(args.raw("status")).lower() != "canceled":
            raise Forbidden("forbidden", "users may only cancel their jobs", "status")
    if (op in (commands.Op.JOB_CREATE, commands.Op.ORDER_CREATE)
            and args.raw("owner_id") not in (None, ctx.actor)):
        raise Forbidden("forbidden", "users submit jobs only in their own name", "owner_id")
