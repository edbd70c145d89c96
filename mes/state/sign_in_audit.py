"""Failed sign-ins in the audit log: each node reports, now and then, how often each account
(or unknown name) failed from each source, and every node records it alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert

from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand
from mes.state.tables import audit_log

MAX_REPORTED = 200
AUDIT_OP = "sign_in.failed"
INTERFACES = ("rest", "opcua")


def _entry(index: int, item: Any) -> tuple[str, str]:
    where = f"failures.{index}"
    if not isinstance(item, dict):
        raise InvalidCommand("invalid_failures", f"{where} must be an object of account, "
                             "source, interface and count", where)
    entry = Args(item)
    entry.reject_unknown(("account", "source", "interface", "count"))
    account = entry.text("account", 64)
    source = entry.text("source", 64, required=False, nullable=True)
    interface = entry.text("interface", 8)
    count = entry.integer("count", 1, 1_000_000_000)
    if not account or interface not in INTERFACES:
        raise InvalidCommand("invalid_failures", f"{where}: an account and an interface of "
                             f"{', '.join(INTERFACES)}", where)
    target = f"{interface} {source if isinstance(source, str) and source else '?'} x{count}"
    return account, target[:64]


def record(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Record failed sign-ins: one audit entry (actor: the account, or `?name` for a name no
    user has; target: `interface source xCOUNT`) per account and source reported."""
    args.reject_unknown(("failures",))
    items = args.raw("failures")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_REPORTED:
        raise InvalidCommand("invalid_failures", f"failures must be a list of 1 to "
                             f"{MAX_REPORTED} entries", "failures")
    rows = [_entry(index, item) for index, item in enumerate(items)]
    for account, target in rows:
        ctx.conn.execute(insert(audit_log).values(at=ctx.ts, actor=account, op=AUDIT_OP,
                                                  target=target))
    return {"recorded": len(rows)}
