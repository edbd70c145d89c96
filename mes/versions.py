"""Rolling upgrades: each node reports its release through Raft, the leader raises the
cluster version once every member supports it, and formats above it wait for that.

The way CockroachDB's and etcd's cluster versions gate new features: a command format that
older nodes cannot apply (mes.state.commands) is submitted only after the leader committed a
cluster version that every member reported supporting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from mes.state import cluster_versions, commands
from mes.state.commands import Op
from mes.version import DATA_LEVEL, RELEASE

log = logging.getLogger(__name__)

# How often a node checks whether it must report its version (or, leading, raise the
# cluster version). While the cluster version is below this node's level (an upgrade in
# progress) it reports again every REPORT_AGAIN seconds, so that every node holds every
# report even when its own snapshot was taken by an older release that ignored them.
CHECK_SECONDS = 1.0
REPORT_AGAIN = 5.0


class NotUpgraded(Exception):
    """A command format above the cluster version: not every member can apply it yet."""

    def __init__(self, op: str, level: int, cluster_level: int, what: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(f"{what or op} needs cluster version {level}; the cluster is at "
                         f"{cluster_level} until every node runs a release that supports it")
        self.op, self.level, self.cluster_level = op, level, cluster_level
        self.field = field


class ClusterVersion:
    """This node's view of the committed cluster version, cached between changes."""

    def __init__(self, read_now: Callable[[Callable[[Connection], Any]], Any]) -> None:
        self._read_now = read_now
        self._level: int | None = None

    def on_apply(self, command: Mapping[str, Any], outcome: Any) -> None:
        """Forget the cached level when a cluster.version command applied."""
        if isinstance(command, Mapping) and command.get("op") == Op.CLUSTER_VERSION:
            self._level = None

    def on_restore(self) -> None:
        """A snapshot replaced the state: read the level again."""
        self._level = None

    def level(self) -> int:
        """The committed cluster version (1 until the leader commits one)."""
        level = self._level
        if level is None:
            level = self._level = int(self._read_now(cluster_versions.current_level))
        return level

    def writable(self, op: str, args: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """The newest format of `op` the cluster version allows, and `args` in it: a newer
        format falls back to the one before it where it says how (`Format.older`), else
        NotUpgraded."""
        plain = dict(args)
        command = commands.declared(op)
        if command is None:
            return 1, plain
        version = command.current
        while version > 1 and not command.formats[version].before_gate:
            cluster_level = self.level()
            if version <= cluster_level:
                break
            older = command.formats[version].older
            if older is None:
                raise NotUpgraded(op, version, cluster_level)
            try:
                plain = older(plain)
            except commands.NoOlderForm as exc:
                raise NotUpgraded(op, version, cluster_level, exc.what, exc.field) from None
            version = max(v for v in command.formats if v < version)
        return version, plain

    def check(self, op: str) -> None:
        """Raise NotUpgraded if no format of `op` may be written at the cluster version."""
        self.writable(op, {})


Submit = Callable[[str, Mapping[str, Any]], Awaitable[Any]]


class FreshReports:
    """Whether every member's report has reached every node, as far as the leader can tell.

    A node that ran a release before level 2 applied other nodes' reports as unknown
    commands and may still hold a snapshot of that time without them. It applies every
    report committed after its own first report from the new release. So the leader raises
    the cluster version only once every member reported again after the last change of any
    member's release or level it saw (a sole changer's own report counts: nothing of its
    new release came before it). Order is the leader's own applied order, never clocks; a
    new leader (knowing nothing) waits for one more report of every member.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._waiting: set[str] = set()

    def ready(self, members: list[str], reports: Mapping[str, Mapping[str, Any]]) -> bool:
        """Observe the reports of `members`; True when none is older than the last change."""
        now = {m: (reports[m]["release"], reports[m]["level"], reports[m]["reported_at"])
               for m in members if m in reports}
        if len(now) < len(members):
            return False
        changed = [m for m in members if self._seen.get(m, (None, None))[:2] != now[m][:2]]
        if changed or set(self._seen) != set(members):
            self._seen = now
            self._waiting = set(members) - (set(changed) if len(changed) == 1 else set())
        else:
            self._waiting = {m for m in self._waiting if now[m] == self._seen[m]}
        return not self._waiting


class VersionReporter:
    """Reports this node's version and, on the leader, raises the cluster version."""

    def __init__(self, address: str, read: Callable[[Callable[[Connection], Any]], Any],
                 submit: Submit, is_leader: Callable[[], bool],
                 members: Callable[[], list[str]], cluster: ClusterVersion,
                 on_level: Callable[[int], None] | None = None) -> None:
        self.address = address
        self._on_level = on_level
        self._read = read
        self._submit = submit
        self._is_leader = is_leader
        self._members = members
        self._cluster = cluster
        self._last_report = -REPORT_AGAIN
        self._fresh = FreshReports()

    async def run(self) -> None:
        """Forever: report when needed, raise the cluster version when possible."""
        while True:
            with contextlib.suppress(Exception):
                await self.step()
            await asyncio.sleep(CHECK_SECONDS)

    async def step(self) -> None:
        """One check: report this node's version; leading, raise the cluster version."""
        if self._on_level is not None:  # what the cluster version switches on (pre-vote)
            self._on_level(self._cluster.level())
        reports = await asyncio.to_thread(self._read, cluster_versions.reported)
        level = self._cluster.level()  # cached until a cluster.version or snapshot applies
        mine = reports.get(self.address)
        now = asyncio.get_running_loop().time()
        stale = mine is None or (mine["release"], mine["level"]) != (RELEASE, DATA_LEVEL)
        if stale or (level < DATA_LEVEL and now - self._last_report >= REPORT_AGAIN):
            outcome = await self._submit(Op.NODE_VERSION, {
                "node": self.address, "release": RELEASE, "level": DATA_LEVEL})
            if getattr(outcome, "ok", False):
                self._last_report = now
                reports = await asyncio.to_thread(self._read, cluster_versions.reported)
        if self._is_leader():
            await self._raise_cluster_version(reports, level)

    async def _raise_cluster_version(self, reports: dict[str, dict[str, Any]],
                                     level: int) -> None:
        members = sorted(self._members())
        levels = [reports[m]["level"] if m in reports else None for m in members]
        if None in levels:
            return  # a member has not reported (an older release, or not yet)
        target = min(min(lv for lv in levels if lv is not None), DATA_LEVEL)
        strangers = set(reports) - set(members)
        fresh = self._fresh.ready(members, reports)
        if target > level and not fresh:
            return  # a member may not yet hold every other member's report
        if target > level or (strangers and target >= level):
            outcome = await self._submit(Op.CLUSTER_VERSION,
                                         {"level": target, "members": members})
            if getattr(outcome, "ok", False) and target > level:
                log.warning("cluster version raised from %d to %d: every member runs a "
                            "release that supports it", level, target)
