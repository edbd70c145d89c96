"""Every command the state machine applies, declared once: its name, handler, least role,
whether it moves the farm version, and its format versions with what each meant.

A command's format version (`v` in the command) is the data level (mes.version.DATA_LEVEL)
its format was defined at: release 0.1.0 wrote level 1 and no `v` at all. A format keeps
its meaning forever: when an op changes, its old format keeps its handler (or a
deterministic translation to the new one) and the new format gets the new level. A format
of a level above the cluster version is submitted only once the leader has committed a
cluster version every member supports (`mes.versions.ClusterVersion.check`), except formats marked
`before_gate`: older nodes reject those as unknown and change nothing, harmlessly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mes.state import (
    cluster_versions,
    farm,
    filaments,
    jobs,
    notifications,
    orders,
    printer_groups,
    printers,
    queue_order,
    retention,
    shards,
    sign_in_audit,
    stored_files,
    users,
)
from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.ops import Op

__all__ = ["COMMANDS", "Command", "Format", "NoOlderForm", "Op"]

Handler = Callable[[ApplyContext, Args], Any]


class NoOlderForm(Exception):
    """This request has no form in the older format (`Format.older`): it must wait for the
    cluster version, and the message says what in it needs the new format."""

    def __init__(self, what: str, field: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.field = field


@dataclass(frozen=True)
class Format:
    """One format version of a command: the handler that gives it the meaning it had."""

    handler: Handler
    meaning: str = ""
    # Older nodes reject this format as an unknown op and change nothing: it may be
    # submitted before the cluster version reaches its level.
    before_gate: bool = False
    # How the same request is written in the format before this one, while the cluster
    # version is below this format's level (None: it cannot be, and must wait; it raises
    # NoOlderForm for a request that cannot be).
    older: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Command:
    """One command: its formats by version, who may send it, what it moves."""

    op: Op
    formats: Mapping[int, Format]
    # The least role of a user whose request may carry it; None: the farm's own command
    # (workers, the leader), which no user's request may carry.
    min_role: str | None = None
    # False for commands that change neither printers, jobs, spools nor assignments
    # (telemetry, lease renewals, versions): workers' cached views survive them.
    moves_farm: bool = True

    @property
    def current(self) -> int:
        """The format version this release writes."""
        return max(self.formats)


def _noop(ctx: ApplyContext, args: Args) -> None:
    return None


def _v1(handler: Handler, op: Op, min_role: str | None = None,
        moves_farm: bool = True) -> Command:
    """A command whose only format is release 0.1.0's (level 1)."""
    return Command(op, {1: Format(handler, "as in release 0.1.0")}, min_role, moves_farm)


def _same(args: dict[str, Any]) -> dict[str, Any]:
    return args


def _to_level_4(op: Op, v1: Handler, v4: Handler, meaning: str,
                min_role: str | None = None) -> Command:
    """A command of release 0.1.0 whose level-4 format adds a check: the same arguments,
    written as level 1 (without the check) while the cluster is below level 4."""
    return Command(op, {1: Format(v1, "as in release 0.1.0"),
                        4: Format(v4, meaning, older=_same)}, min_role)


def _to_level_7(command: Command, v7: Handler, meaning: str) -> Command:
    """A command whose level-7 format adds to its latest one: the same arguments, written in
    that format (without the addition) while the cluster is below level 7."""
    return Command(command.op, {**command.formats, 7: Format(v7, meaning, older=_same)},
                   command.min_role, command.moves_farm)


_OWN_NAMES = ("as level 4, and a job that names only a file takes the name its owner gave "
              "the file (the stored name when they never uploaded it)")


def _level_1_kind(args: dict[str, Any]) -> dict[str, Any]:
    """A printer request written as level 1: only if it names a level-1 kind (or none)."""
    api = args.get("api")
    if api is not None and api not in printers.PRINTER_APIS_V1:
        raise NoOlderForm(f"a printer of api {api!r}", "api")
    return args


_KINDS_OF_0_6 = "as level 1, and api may also be Moonraker (Klipper) or Duet (RepRapFirmware)"

_DECLARED = (
    Command(Op.PRINTER_CREATE, {1: Format(printers.create, "as in release 0.1.0"),
                                6: Format(printers.create_any_kind, _KINDS_OF_0_6,
                                          older=_level_1_kind)}, "operator"),
    Command(Op.PRINTER_UPDATE, {1: Format(printers.update_, "as in release 0.1.0"),
                                6: Format(printers.update_any_kind, _KINDS_OF_0_6,
                                          older=_level_1_kind)}, "operator"),
    _v1(printers.delete_, Op.PRINTER_DELETE, "operator"),
    Command(Op.GROUP_RENAME, {7: Format(
        printer_groups.rename, "an operator renames a printer group (or dissolves it): every "
        "printer of the group at once")}, "operator"),
    _v1(filaments.create, Op.FILAMENT_CREATE, "operator"),
    _v1(filaments.update_, Op.FILAMENT_UPDATE, "operator"),
    _v1(filaments.delete_, Op.FILAMENT_DELETE, "operator"),
    _to_level_7(_to_level_4(Op.JOB_CREATE, jobs.create, jobs.create_owned, "as level 1, and "
                "a user (not staff) may name only a file they uploaded or a job of theirs "
                "prints; another's file is not found", "user"),
                jobs.create_named, _OWN_NAMES),
    _v1(jobs.set_status, Op.JOB_SET_STATUS, "user"),
    _to_level_7(_to_level_4(Op.FILE_REGISTER, stored_files.register,
                            stored_files.register_owned, "as level 1, and the uploader is "
                            "recorded as an owner of the file", "user"),
                stored_files.register_named, "as level 4, and the uploader's own name for "
                "the file is kept, with the time (their latest upload's)"),
    Command(Op.NODE_ANNOUNCE, {
        1: Format(stored_files.announce_node, "as in release 0.1.0"),
        6: Format(stored_files.announce_node_endpoints, "as level 1, with the node's OPC UA "
                  "endpoint (or null)", older=lambda args: {
                      k: v for k, v in args.items() if k != "opcua_url"})}),
    _v1(stored_files.forget_node, Op.NODE_FORGET, "admin"),
    _v1(farm.begin_epoch, Op.LEADER_BEGIN),
    _v1(shards.renew_lease, Op.NODE_LEASE, moves_farm=False),
    _v1(shards.assign, Op.SHARD_ASSIGN),
    _v1(shards.release, Op.SHARD_RELEASE),
    _v1(farm.claim, Op.JOB_CLAIM),
    _v1(farm.started, Op.JOB_STARTED),
    _v1(farm.sending, Op.JOB_SENDING),
    _v1(farm.start_failed, Op.JOB_START_FAILED),
    _v1(farm.finished, Op.JOB_FINISHED),
    _v1(farm.lost, Op.JOB_LOST),
    _v1(farm.set_phase, Op.JOB_PHASE),
    _v1(farm.external, Op.JOB_EXTERNAL),
    _v1(farm.request_action, Op.JOB_REQUEST, "user"),
    _v1(farm.bed_cleared, Op.PRINTER_BED_CLEARED, "operator"),
    _v1(farm.needs_attention, Op.PRINTER_ATTENTION),
    _v1(farm.reserve, Op.PRINTER_RESERVE, "operator"),
    _v1(farm.release, Op.PRINTER_RELEASE, "operator"),
    _v1(farm.telemetry, Op.PRINTER_TELEMETRY, moves_farm=False),
    _v1(jobs.approve, Op.JOB_APPROVE, "operator"),
    _v1(jobs.reject, Op.JOB_REJECT, "operator"),
    Command(Op.JOB_REORDER, {7: Format(
        queue_order.reorder, "an operator gives a waiting job a priority or places it just "
        "before or after another waiting job")}, "operator"),
    _to_level_7(_to_level_4(Op.ORDER_CREATE, orders.create, orders.create_owned, "as level 1, "
                "each job as job.create level 4", "user"),
                orders.create_named, "as level 4, each job as job.create level 7"),
    _v1(users.bootstrap, Op.USER_BOOTSTRAP),
    _to_level_4(Op.USER_CREATE, users.create, users.create_distinct, "as level 1, and the "
                "id is no user's name, the name no other user's id (any letter case)", "admin"),
    Command(Op.USER_UPDATE, {
        1: Format(users.update_, "as in release 0.1.0"),
        3: Format(users.update_ending_sessions, "as level 1, and a new password ends the "
                  "user's web sessions but `keep_token`",
                  older=lambda args: {k: v for k, v in args.items() if k != "keep_token"}),
        4: Format(users.update_distinct, "as level 3, and a new name is no other user's id "
                  "(any letter case)", older=_same),
    }, "user"),
    _v1(users.oidc_login, Op.USER_OIDC_LOGIN),
    _v1(users.create_token, Op.TOKEN_CREATE, "user"),
    _v1(users.revoke_token, Op.TOKEN_REVOKE, "user"),
    _v1(users.token_used, Op.TOKEN_USED),
    _v1(retention.prune, Op.RETENTION_PRUNE, "admin"),
    _v1(notifications.create_webhook, Op.WEBHOOK_CREATE, "operator"),
    _v1(notifications.delete_webhook, Op.WEBHOOK_DELETE, "operator"),
    _v1(notifications.delivery_result, Op.DELIVERY_RESULT),
    _v1(_noop, Op.NOOP),
    Command(Op.SIGN_IN_FAILED, {4: Format(
        sign_in_audit.record, "a node reports failed sign-ins to the audit log")},
        moves_farm=False),
    Command(Op.NODE_VERSION, {2: Format(
        cluster_versions.report, "a node reports the release and data level it runs",
        before_gate=True)}, moves_farm=False),
    Command(Op.CLUSTER_VERSION, {2: Format(
        cluster_versions.set_cluster_version, "the leader raises the cluster version",
        before_gate=True)}, moves_farm=False),
)

COMMANDS: dict[str, Command] = {command.op: command for command in _DECLARED}


def declared(op: Any) -> Command | None:
    """The declaration of `op`, or None for a name no release of this code knows."""
    return COMMANDS.get(op) if isinstance(op, str) else None


def format_of(op: Any, version: int) -> Format | None:
    """The handler of `op` in format `version`, or None if this code has no such format."""
    command = declared(op)
    return command.formats.get(version) if command is not None else None


def min_role(op: str) -> str | None:
    """The least role whose requests may carry `op` (None: no user's request may)."""
    command = declared(op)
    return command.min_role if command is not None else None


def moves_farm(op: Any) -> bool:
    """Whether applying `op` may change printers, jobs, spools or assignments."""
    command = declared(op)
    return command is None or command.moves_farm


def current_version(op: str) -> int:
    """The format version this release writes for `op` (1 for an op it does not declare)."""
    command = declared(op)
    return command.current if command is not None else 1
