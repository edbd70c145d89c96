"""Filament spool commands: create, update, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, update

from mes.state import queries
from mes.state.args import Args, present
from mes.state.context import ApplyContext
from mes.state.errors import NotFound, RuleViolation
from mes.state.tables import filaments, printers

FILAMENT_TYPES = ("PLA", "PETG", "ABS", "TPU")
_FIELDS = ("type", "color", "total_weight_in_grams", "remaining_weight_in_grams")


def _fields(args: Args, required: bool) -> dict[str, Any]:
    return present(
        type=args.choice("type", FILAMENT_TYPES, required=required),
        color=args.text("color", 64, required=required),
        total_weight_in_grams=args.grams("total_weight_in_grams", 1, required=required),
        remaining_weight_in_grams=args.grams("remaining_weight_in_grams", 0, required=False),
    )


def _check_weights(total: int, remaining: int, reserved: int) -> None:
    if remaining > total:
        raise RuleViolation("remaining_above_total",
                            f"remaining weight {remaining} g exceeds total weight {total} g",
                            "remaining_weight_in_grams")
    if remaining < reserved:
        raise RuleViolation("remaining_below_reserved",
                            f"remaining weight {remaining} g is below the {reserved} g "
                            "reserved by queued and running jobs", "remaining_weight_in_grams")


def create(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Register a spool; remaining weight defaults to the total."""
    args.reject_unknown(("id", *_FIELDS))
    filament_id = args.ident("id")
    assert filament_id is not None
    values = _fields(args, required=True)
    values.setdefault("remaining_weight_in_grams", values["total_weight_in_grams"])
    if queries.get_filament(ctx.conn, filament_id) is not None:
        raise RuleViolation("already_exists", f"filament {filament_id!r} already exists", "id")
    _check_weights(values["total_weight_in_grams"], values["remaining_weight_in_grams"], 0)
    ctx.conn.execute(insert(filaments).values(id=filament_id, reserved_weight_in_grams=0,
                                              created_at=ctx.ts, updated_at=ctx.ts, **values))
    ctx.changed("filament", filament_id, "created")
    return _read(ctx, filament_id)


def update_(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Change fields of a spool, keeping reserved <= remaining <= total."""
    args.reject_unknown(("id", *_FIELDS))
    filament_id = args.ident("id")
    assert filament_id is not None
    current = queries.get_filament(ctx.conn, filament_id)
    if current is None:
        raise NotFound("filament_not_found", f"filament {filament_id!r} does not exist", "id")
    values = _fields(args, required=False)
    merged = {**current, **values}
    _check_weights(merged["total_weight_in_grams"], merged["remaining_weight_in_grams"],
                   current["reserved_weight_in_grams"])
    if values:
        ctx.conn.execute(update(filaments).where(filaments.c.id == filament_id)
                         .values(updated_at=ctx.ts, **values))
        ctx.changed("filament", filament_id, "updated")
    return _read(ctx, filament_id)


def delete_(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Remove a spool that no Queued or Running job needs; printers holding it unload it."""
    args.reject_unknown(("id",))
    filament_id = args.ident("id")
    assert filament_id is not None
    if queries.get_filament(ctx.conn, filament_id) is None:
        raise NotFound("filament_not_found", f"filament {filament_id!r} does not exist", "id")
    active = queries.count_active_jobs(ctx.conn, "filament_id", filament_id)
    if active:
        raise RuleViolation("filament_in_use",
                            f"filament {filament_id!r} has {active} queued or running jobs", "id")
    loaded = ctx.conn.execute(
        update(printers).where(printers.c.filament_id == filament_id)
        .values(filament_id=None, updated_at=ctx.ts).returning(printers.c.id)
    ).scalars().all()
    for printer_id in loaded:
        ctx.changed("printer", printer_id, "updated")
    ctx.conn.execute(delete(filaments).where(filaments.c.id == filament_id))
    ctx.changed("filament", filament_id, "deleted")
    return {"id": filament_id, "deleted": True}


def _read(ctx: ApplyContext, filament_id: str) -> dict[str, Any]:
    row = queries.get_filament(ctx.conn, filament_id)
    assert row is not None
    return row
