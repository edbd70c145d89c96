"""Which release each node runs and which data level the whole cluster may use.

Nodes report their release and level (`node.version`); the leader raises the cluster
version (`cluster.version`) once every member reported a level at least as high. Both are
new in level 2: a node of release 0.1.0 rejects them as unknown and changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand, NewerData, RuleViolation
from mes.state.shards import check_address
from mes.state.tables import cluster_version, node_versions
from mes.version import DATA_LEVEL

# The level of a cluster that never committed one: release 0.1.0's.
BASE_LEVEL = 1
MAX_LEVEL = 1_000_000


def _level(args: Args, name: str = "level") -> int:
    value = args.integer(name, BASE_LEVEL, MAX_LEVEL)
    assert isinstance(value, int)
    return value


def report(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """A node reports the release it runs and the highest data level it applies."""
    args.reject_unknown(("node", "release", "level"))
    node = check_address(args.raw("node"), "node")
    release = args.text("release", 64)
    level = _level(args)
    values = {"release": release, "level": level, "reported_at": ctx.ts}
    found = ctx.conn.execute(select(node_versions.c.node).where(
        node_versions.c.node == node)).first()
    if found is None:
        ctx.conn.execute(insert(node_versions).values(node=node, **values))
    else:
        ctx.conn.execute(update(node_versions).where(node_versions.c.node == node)
                         .values(**values))
    return {"node": node, "release": release, "level": level}


def set_cluster_version(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """The leader raises the cluster version for `members` (the Raft members it saw).

    Refused unless every member reported a level at least as high, and never lowered (a
    downgrade). Reports of nodes that are no longer members are dropped, so every node
    holds the same reports from here on.
    """
    args.reject_unknown(("level", "members"))
    level = _level(args)
    if level > DATA_LEVEL:
        raise NewerData(f"the cluster version was raised to level {level}, and this node "
                        f"applies up to level {DATA_LEVEL}: it runs an older release than "
                        "the cluster. Upgrade this node.")
    members = args.raw("members")
    if (not isinstance(members, list) or not members or len(members) > 1000
            or len(set(members)) != len(members)):
        raise InvalidCommand("invalid_members", "members must list the cluster's nodes",
                             "members")
    addresses = [check_address(member, "members") for member in members]
    current = current_level(ctx.conn)
    if level < current:
        raise RuleViolation("cluster_version_lowered",
                            f"the cluster version is {current}; it is never lowered", "level")
    reported = {row.node: row.level for row in
                ctx.conn.execute(select(node_versions.c.node, node_versions.c.level))}
    behind = sorted(a for a in addresses if reported.get(a, BASE_LEVEL) < level)
    if behind:
        raise RuleViolation("members_behind", f"{', '.join(behind)} did not report level "
                            f"{level}", "members")
    ctx.conn.execute(delete(node_versions).where(node_versions.c.node.not_in(addresses)))
    if ctx.conn.execute(select(cluster_version.c.id)).first() is None:
        ctx.conn.execute(insert(cluster_version).values(id=1, level=level, since=ctx.ts))
    elif level > current:
        ctx.conn.execute(update(cluster_version).values(level=level, since=ctx.ts))
    return {"level": level, "members": addresses}


def current_level(conn: Connection) -> int:
    """The committed cluster version (BASE_LEVEL when none was ever committed)."""
    value = conn.execute(select(cluster_version.c.level)).scalar()
    return int(value) if value is not None else BASE_LEVEL


def reported(conn: Connection) -> dict[str, dict[str, Any]]:
    """Each node's last report: {node: {release, level, reported_at}}."""
    return {row.node: {"release": row.release, "level": row.level,
                       "reported_at": row.reported_at}
            for row in conn.execute(select(node_versions))}
