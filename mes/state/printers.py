"""Printer commands: create, update, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update

from mes.state import queries
from mes.state.args import ID_PATTERN, MISSING, OPCUA_NAME_PATTERN, Args, present
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand, NotFound, RuleViolation
from mes.state.intervals import close_interval, record_states
from mes.state.shards import add_printer, check_address, remove_printer
from mes.state.tables import filaments, printer_status, printers
from mes.state.urls import url_problem

# The printer kinds of format level 1; level 6 (release 0.6.0) adds Klipper through Moonraker
# and Duet (RepRapFirmware).
PRINTER_APIS_V1 = ("OctoPrint", "PrusaLink", "Mock")
PRINTER_APIS = (*PRINTER_APIS_V1, "Moonraker", "Duet")
_FIELDS = ("company", "model", "url", "api", "api_key", "opcua_name", "worker", "group",
           "camera_url", "filament_id", "hub")


def _fields(args: Args, apis: tuple[str, ...]) -> dict[str, Any]:
    return present(
        company=args.text("company", 200, required=False),
        model=args.text("model", 200, required=False),
        url=_url(args, "url"),
        api=args.choice("api", apis, required=False, nullable=True),
        api_key=args.text("api_key", 256, required=False, nullable=True),
        opcua_name=args.pattern("opcua_name", OPCUA_NAME_PATTERN,
                                "a letter then up to 63 letters, digits, '_' or '-'"),
        worker=args.flag("worker", required=False),
        group=args.text("group", 200, required=False, nullable=True),
        camera_url=_url(args, "camera_url"),
        filament_id=args.pattern("filament_id", ID_PATTERN, "a filament id"),
        hub=_hub(args),
    )


def _hub(args: Args) -> Any:
    """The Raft address (host:port) of the node that drives the printer, absent, or null."""
    value = args.raw("hub") if args.has("hub") else MISSING
    if value is MISSING or value is None:
        return value
    return check_address(value, "hub")


def _url(args: Args, name: str) -> Any:
    """An http(s)://host[:port][/path] URL (mes.state.urls), absent, or null."""
    value = args.raw(name) if args.has(name) else MISSING
    if value is MISSING or value is None:
        return value
    problem = url_problem(value)
    if problem is not None:
        raise InvalidCommand("invalid_url", f"{name} {problem}", name)
    return value


def drivable(printer: dict[str, Any]) -> bool:
    """Whether a printer can be driven: a mock, or a url with its api. Such a printer gets a
    worker unless it is created with `worker: false` (a record only)."""
    url = printer.get("url") or ""
    return printer.get("api") == "Mock" or "mock" in url.lower() or bool(
        url and printer.get("api") is not None)


def _kinds(apis: tuple[str, ...]) -> str:
    """`apis` in words: "OctoPrint, PrusaLink or Mock" (format 1's refusal says exactly
    that: a rejected command's outcome is replicated, so its words keep their format)."""
    return f"{', '.join(apis[:-1])} or {apis[-1]}"


def _check_worker(printer: dict[str, Any], apis: tuple[str, ...]) -> None:
    """A printer with a worker must be reachable: mock, or a url with its api."""
    if not printer.get("worker"):
        return
    url = printer.get("url") or ""
    if printer.get("api") == "Mock" or "mock" in url.lower():
        return
    if not url:
        raise RuleViolation("worker_needs_url", "a printer with a worker needs a url", "url")
    if printer.get("api") is None:
        raise RuleViolation("worker_needs_api", "a printer with a worker needs its api "
                            f"({_kinds(apis)})", "api")


def _check_references(ctx: ApplyContext, printer_id: str, values: dict[str, Any]) -> None:
    name = values.get("opcua_name")
    if name is not None:
        owner = ctx.conn.execute(
            select(printers.c.id).where(printers.c.opcua_name == name, printers.c.id != printer_id)
        ).first()
        if owner is not None:
            raise RuleViolation("opcua_name_taken",
                                f"opcua_name {name!r} is used by printer {owner[0]!r}",
                                "opcua_name")
    spool = values.get("filament_id")
    if spool is not None and ctx.conn.execute(
        select(filaments.c.id).where(filaments.c.id == spool)
    ).first() is None:
        raise NotFound("filament_not_found", f"filament {spool!r} does not exist", "filament_id")


def create(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Register a printer of a level-1 kind (format 1)."""
    return _create(ctx, args, PRINTER_APIS_V1)


def create_any_kind(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Register a printer of any kind this release drives (format 6)."""
    return _create(ctx, args, PRINTER_APIS)


def _create(ctx: ApplyContext, args: Args, apis: tuple[str, ...]) -> dict[str, Any]:
    """Register a printer; its id must be new."""
    args.reject_unknown(("id", *_FIELDS))
    printer_id = args.ident("id")
    assert printer_id is not None
    values = _fields(args, apis)
    if queries.get_printer(ctx.conn, printer_id) is not None:
        raise RuleViolation("already_exists", f"printer {printer_id!r} already exists", "id")
    values.setdefault("worker", drivable(values))
    _check_worker(values, apis)
    _check_references(ctx, printer_id, values)
    row = {"company": "", "model": "", **values}
    ctx.conn.execute(insert(printers).values(id=printer_id, created_at=ctx.ts, updated_at=ctx.ts,
                                             **row))
    add_printer(ctx, printer_id)
    record_states(ctx, [printer_id])
    ctx.changed("printer", printer_id, "created")
    return _read(ctx, printer_id)


def update_(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Change a printer, to a level-1 kind only (format 1)."""
    return _update(ctx, args, PRINTER_APIS_V1)


def update_any_kind(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Change a printer, to any kind this release drives (format 6)."""
    return _update(ctx, args, PRINTER_APIS)


def _update(ctx: ApplyContext, args: Args, apis: tuple[str, ...]) -> dict[str, Any]:
    """Change some fields of a printer. A new url clears the stored api_key unless the same
    command sets one: a key is never sent to an address it was not given for."""
    args.reject_unknown(("id", *_FIELDS))
    printer_id = args.ident("id")
    assert printer_id is not None
    current = queries.get_printer(ctx.conn, printer_id)
    if current is None:
        raise NotFound("printer_not_found", f"printer {printer_id!r} does not exist", "id")
    values = _fields(args, apis)
    if "url" in values and values["url"] != current["url"] and "api_key" not in values:
        # The stored key was given for the old address: never send it to a new one.
        values["api_key"] = None
    _check_worker({**current, **values}, apis)
    _check_references(ctx, printer_id, values)
    if values:
        ctx.conn.execute(update(printers).where(printers.c.id == printer_id)
                         .values(updated_at=ctx.ts, **values))
        ctx.changed("printer", printer_id, "updated")
    return _read(ctx, printer_id)


def delete_(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Remove a printer that no Queued or Running job needs."""
    args.reject_unknown(("id",))
    printer_id = args.ident("id")
    assert printer_id is not None
    if queries.get_printer(ctx.conn, printer_id) is None:
        raise NotFound("printer_not_found", f"printer {printer_id!r} does not exist", "id")
    active = queries.count_active_jobs(ctx.conn, "printer_id", printer_id)
    if active:
        raise RuleViolation("printer_in_use",
                            f"printer {printer_id!r} has {active} queued or running jobs", "id")
    ctx.conn.execute(delete(printers).where(printers.c.id == printer_id))
    remove_printer(ctx, printer_id)
    # A printer made again with this id starts unseen, not with this one's last status.
    ctx.conn.execute(delete(printer_status).where(printer_status.c.printer_id == printer_id))
    close_interval(ctx, printer_id)
    ctx.changed("printer", printer_id, "deleted")
    return {"id": printer_id, "deleted": True}


def _read(ctx: ApplyContext, printer_id: str) -> dict[str, Any]:
    row = queries.get_printer(ctx.conn, printer_id)
    assert row is not None
    return row
