"""Which node drives which printer: node leases, assignments and per-printer fencing.

Every node renews its lease (`node.lease`). The leader plans assignments with the balancer
(mes/workers/balancer.py) and commits them with `shard.assign`, which may also expire the
leases of nodes it has not heard from in NODE_LEASE_SECONDS. Apply decides how a printer
moves, from the replicated leases alone: from nobody or from an expired node it moves at
once (a new epoch); from a live node it is only asked to be released (`release`), and the
driving node moves it with `shard.release` once its worker has stopped. Every command a
printer's worker sends carries (printer id, assignment epoch) and `fence` refuses a stale
one, so a node that lost a printer can never change that printer's state again.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from mes.state import queries
from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand, RuleViolation
from mes.state.prepared import Prepared
from mes.state.tables import assignments, counters, leadership, node_leases

# A node's Raft address: host:port.
NODE_ADDRESS = re.compile(r"^([A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:]{2,45}\]):[0-9]{1,5}$")
MAX_EPOCH = 2**62
MAX_MOVES = 10_000


def check_address(value: Any, name: str) -> str:
    """A Raft address host:port with a port in 1..65535, or InvalidCommand."""
    if not isinstance(value, str) or not NODE_ADDRESS.match(value) \
            or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise InvalidCommand("invalid_node", f"{name} must be a node's Raft address host:port",
                             name)
    return value


def next_epoch(ctx: ApplyContext) -> int:
    """The next assignment epoch (farm-wide, so an epoch is never handed out twice)."""
    value = ctx.conn.execute(select(counters.c.value).where(
        counters.c.name == "assignment")).scalar()
    epoch = int(value or 0) + 1
    if value is None:
        ctx.conn.execute(insert(counters).values(name="assignment", value=epoch))
    else:
        ctx.conn.execute(update(counters).where(counters.c.name == "assignment")
                         .values(value=epoch))
    return epoch


def upgrade(conn: Connection) -> None:
    """A snapshot from before shards: printers get their `hub` column and an assignment to
    nobody (the leader places them). The same on every node that restores it."""
    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(printers)")}
    if "hub" not in columns:
        conn.exec_driver_sql("ALTER TABLE printers ADD COLUMN hub VARCHAR(300)")
    conn.exec_driver_sql(
        "INSERT INTO assignments (printer_id, node, epoch, since, release) "
        "SELECT id, NULL, 0, 0, 0 FROM printers "
        "WHERE id NOT IN (SELECT printer_id FROM assignments)")


def add_printer(ctx: ApplyContext, printer_id: str) -> None:
    """A new printer is driven by nobody until the leader places it."""
    ctx.conn.execute(insert(assignments).values(printer_id=printer_id, node=None, epoch=0,
                                                since=ctx.ts, release=False))


def remove_printer(ctx: ApplyContext, printer_id: str) -> None:
    """A deleted printer's assignment goes with it."""
    ctx.conn.execute(delete(assignments).where(assignments.c.printer_id == printer_id))


_LEASE = Prepared(select(node_leases).where(node_leases.c.node == bindparam("node")))
_RENEW = Prepared(update(node_leases).where(node_leases.c.node == bindparam("lease_of")).values(
    seq=bindparam("seq"), renewed_at=bindparam("ts"), expired=False, expired_at=None))


def _assignment(ctx: ApplyContext, printer_id: str) -> dict[str, Any] | None:
    return queries.assignment_of(ctx.conn, printer_id)


def fence(ctx: ApplyContext, printer_id: str | None, epoch: Any) -> None:
    """Refuse a worker's command unless `epoch` is the printer's current assignment epoch."""
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 < epoch <= MAX_EPOCH:
        raise InvalidCommand("invalid_type", "epoch must be a positive integer", "epoch")
    row = _assignment(ctx, printer_id) if printer_id else None
    if row is None or row["node"] is None or row["epoch"] != epoch:
        current = None if row is None else row["epoch"]
        raise RuleViolation("stale_epoch", f"epoch {epoch} of printer {printer_id!r} is not "
                            f"its current assignment epoch {current}", "epoch")


def live_nodes(ctx: ApplyContext) -> set[str]:
    """Nodes whose lease is not expired."""
    return set(ctx.conn.execute(select(node_leases.c.node).where(
        node_leases.c.expired.is_(False))).scalars())


def renew_lease(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """A node renews its lease (and comes back to life if it had expired)."""
    args.reject_unknown(("node",))
    node = check_address(args.raw("node"), "node")
    row = _LEASE.run(ctx.conn, {"node": node}).first()
    if row is None:
        ctx.conn.execute(insert(node_leases).values(node=node, seq=1, renewed_at=ctx.ts,
                                                    expired=False))
        seq = 1
    else:
        seq = row.seq + 1
        _RENEW.run(ctx.conn, {"lease_of": node, "seq": seq, "ts": ctx.ts})
    if row is None or row.expired:
        ctx.changed("node", node, "updated")
    return {"node": node, "seq": seq}


def _move(ctx: ApplyContext, row: dict[str, Any], target: str | None, live: set[str]) -> str:
    """Move one printer towards `target`; returns what happened."""
    current = row["node"]
    printer_id = row["printer_id"]
    if current == target:
        if row["release"]:
            ctx.conn.execute(update(assignments).where(assignments.c.printer_id == printer_id)
                             .values(release=False, moving_to=None))
            ctx.changed("assignment", printer_id, "updated")
            return "kept"
        return "unchanged"
    if current is not None and current in live:
        # The live driver first stops its worker, then commits shard.release.
        ctx.conn.execute(update(assignments).where(assignments.c.printer_id == printer_id)
                         .values(release=True, moving_to=target))
        ctx.changed("assignment", printer_id, "updated")
        return "releasing"
    _set_node(ctx, printer_id, target)
    return "moved"


def _set_node(ctx: ApplyContext, printer_id: str, node: str | None) -> None:
    ctx.conn.execute(update(assignments).where(assignments.c.printer_id == printer_id).values(
        node=node, epoch=next_epoch(ctx), since=ctx.ts, release=False, moving_to=None))
    ctx.changed("assignment", printer_id, "updated")
    ctx.changed("printer", printer_id, "updated")


def assign(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The leader's plan: expire silent nodes' leases, then move printers.

    `expire`: [{node, seq, renewed_at, silent_for}]: refused whole unless each lease is
    still at `seq` (no renewal committed since the leader judged it silent); `renewed_at`
    and `silent_for` (the leader's own measure) are kept for the record. `moves`:
    [{printer_id, epoch, node}]: a move whose epoch is no longer current, or whose target
    has no live lease, is skipped. Printers left on an expired node are driven by nobody.
    """
    args.reject_unknown(("leader_epoch", "now", "expire", "moves"))
    leader_epoch = args.integer("leader_epoch", 1, MAX_EPOCH)
    if leader_epoch != ctx.conn.execute(select(leadership.c.epoch)).scalar():
        raise RuleViolation("stale_epoch", f"leader epoch {leader_epoch} is not current",
                            "leader_epoch")
    args.number("now", 0, 1e12)
    expire = args.raw("expire") or []
    moves = args.raw("moves") or []
    if not isinstance(expire, list) or not isinstance(moves, list) or len(moves) > MAX_MOVES:
        raise InvalidCommand("invalid_plan", "expire and moves must be lists", "moves")
    expired = []
    for item in expire:
        entry = Args(item)
        node = check_address(entry.raw("node"), "node")
        seq = entry.integer("seq", 1, MAX_EPOCH)
        lease = ctx.conn.execute(select(node_leases).where(node_leases.c.node == node)).first()
        if lease is None or lease.expired or lease.seq != seq:
            raise RuleViolation("lease_renewed", f"the lease of {node} is not at {seq} "
                                "(renewed or already expired)", "expire")
        ctx.conn.execute(update(node_leases).where(node_leases.c.node == node)
                         .values(expired=True, expired_at=ctx.ts))
        ctx.changed("node", node, "updated")
        expired.append(node)
    live = live_nodes(ctx)
    done: dict[str, str] = {}
    for item in moves:
        entry = Args(item)
        printer_id = entry.ident("printer_id")
        assert printer_id is not None
        epoch = entry.integer("epoch", 0, MAX_EPOCH)
        target = entry.raw("node")
        if target is not None:
            check_address(target, "node")
        row = _assignment(ctx, printer_id)
        if row is None or row["epoch"] != epoch or (target is not None and target not in live):
            done[printer_id] = "skipped"
            continue
        done[printer_id] = _move(ctx, row, target, live)
    for node in expired:
        stranded = ctx.conn.execute(select(assignments.c.printer_id).where(
            assignments.c.node == node)).scalars().all()
        for printer_id in stranded:
            _set_node(ctx, printer_id, None)
            done.setdefault(printer_id, "unassigned")
    return {"expired": expired, "moves": done}


def release(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The driving node stopped its worker of a printer it was asked to release: the printer
    moves to its target (if that still has a live lease) or to nobody."""
    args.reject_unknown(("printer_id", "epoch"))
    printer_id = args.ident("printer_id")
    fence(ctx, printer_id, args.raw("epoch"))
    assert printer_id is not None
    row = _assignment(ctx, printer_id)
    assert row is not None
    if not row["release"]:
        raise RuleViolation("not_releasing", f"printer {printer_id!r} is not being released",
                            "printer_id")
    target = row["moving_to"] if row["moving_to"] in live_nodes(ctx) else None
    _set_node(ctx, printer_id, target)
    return {"printer_id": printer_id, "node": target}
