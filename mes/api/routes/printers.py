"""`/api/v1/printers`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import Request, Response

from mes.api.auth import Operator, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.errors import ApiError
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, page_by_id
from mes.api.schemas import (
    PrinterCreate,
    PrinterOut,
    PrinterStatusOut,
    PrinterUpdate,
    ReservationIn,
)
from mes.networks import (
    HostUnresolved,
    LocalRefused,
    NetworkRefused,
    checked_addresses,
)
from mes.printers.factory import is_mock
from mes.state import listing, queries
from mes.state.ops import Op
from mes.state.urls import url_problem

if TYPE_CHECKING:
    from mes.app.ports import Farm

router = authenticated_router("/printers", "printers")


@router.get("", response_model=list[PrinterOut])
async def list_printers(request: Request, response: Response, node: NodeDep,
                        limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """Printers by id, one page at a time (the next page: `Link` rel=next, `X-Next-Cursor`)."""
    return await page_by_id(request, response, node, lambda c, after, count: queries.with_drive(
        c, listing.printers_page(c, after, count)), limit, cursor)


async def shown(node: Farm, printer: dict[str, Any]) -> dict[str, Any]:
    """A printer with how it is driven (driven_by, drive_state, drive_epoch)."""
    return (await read(node, lambda c: queries.with_drive(c, [printer])))[0]


def check_hub(node: Farm, args: dict[str, Any]) -> None:
    """A hub must be one of this cluster's nodes (its Raft members, as nodes are added and
    removed)."""
    hub = args.get("hub")
    members = node.members()
    if hub is not None and hub not in members:
        raise ApiError(422, "unknown_hub", f"hub: {hub!r} is not a node of this cluster "
                       f"({', '.join(members)})", "hub")


@router.post("", status_code=201, response_model=PrinterOut)
async def create_printer(body: PrinterCreate, node: NodeDep, who: Operator,
                         idempotency_key: IdempotencyKey = None) -> Any:
    """Register a printer."""
    args = body.model_dump(exclude_none=True)
    args.setdefault("id", new_id(idempotency_key, who))
    check_hub(node, args)
    await check_network(node, args, None)
    return await shown(node, await commit(node, Op.PRINTER_CREATE, args, idempotency_key, who))


@router.get("/{printer_id}", response_model=PrinterOut)
async def get_printer(printer_id: str, node: NodeDep) -> Any:
    """One printer, with the node that drives it (`driven_by`, `drive_state`)."""
    return await shown(node, found(await read(node, lambda c: queries.get_printer(
        c, printer_id)), "printer", printer_id))


@router.patch("/{printer_id}", response_model=PrinterOut)
async def update_printer(printer_id: str, body: PrinterUpdate, node: NodeDep, who: Operator,
                         idempotency_key: IdempotencyKey = None) -> Any:
    """Change some fields of a printer (null clears an optional field)."""
    args = {"id": printer_id, **body.model_dump(exclude_unset=True)}
    for name in ("company", "model", "worker"):
        if args.get(name, "") is None:
            args.pop(name)
    if any(name in args for name in ("url", "api", "worker")):
        current = await read(node, lambda c: queries.get_printer(c, printer_id))
        if current is not None:
            await check_network(node, args, current)
    check_hub(node, args)
    return await shown(node, await commit(node, Op.PRINTER_UPDATE, args, idempotency_key, who))


async def check_network(node: Farm, args: dict[str, Any],
                        current: dict[str, Any] | None) -> None:
    """Refuse a driven printer's URL whose host resolves to an address it may not be at (a
    local one unless ALLOW_LOCAL_ADDRESSES, one outside PRINTER_NETWORKS when that is set), or,
    with PRINTER_NETWORKS set, does not resolve. Simulated printers are never connected to,
    so not checked; every connection is checked again."""
    targets = node.settings.printer_targets
    printer = {**(current or {}), **args}
    url = printer.get("url")
    if targets.unrestricted or not url or is_mock(printer) or url_problem(url) is not None:
        return  # a malformed url is refused by the state machine with its own message
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        await checked_addresses(host, port, targets)
    except NetworkRefused as exc:
        raise ApiError(422, "printer_network_refused",
                       f"url: {host} resolves to {exc.address}, outside PRINTER_NETWORKS "
                       f"({node.settings.printer_networks})", "url") from None
    except LocalRefused as exc:
        raise ApiError(422, "printer_address_refused", f"url: {host}: {exc}", "url") from None
    except HostUnresolved:
        if not targets.networks:
            return  # checked again when a connection is made
        raise ApiError(422, "printer_host_unresolved",
                       f"url: {host} does not resolve (PRINTER_NETWORKS is set, so every "
                       "printer's host must resolve inside it)", "url") from None


@router.delete("/{printer_id}", status_code=204)
async def delete_printer(printer_id: str, node: NodeDep, who: Operator,
                         idempotency_key: IdempotencyKey = None) -> Response:
    """Remove a printer that no queued or running job needs."""
    await commit(node, Op.PRINTER_DELETE, {"id": printer_id}, idempotency_key, who)
    return Response(status_code=204)


@router.get("/{printer_id}/status", response_model=PrinterStatusOut)
async def printer_status(printer_id: str, node: NodeDep) -> Any:
    """The latest normalised status of the printer and its age in seconds."""
    printer = found(await read(node, lambda c: queries.get_printer(c, printer_id)), "printer",
                    printer_id)
    status = await read(node, lambda c: queries.printer_status_of(c, printer_id)) or {
        "printer_id": printer_id, "state": "unknown"}
    observed = status.get("observed_at")
    live = node.printer_seen_at(printer_id)
    seen = live if live is not None else observed  # the driving node knows it exactly
    return {**status, "last_seen_at": seen,
            "age_seconds": None if seen is None else max(0.0, time.time() - seen),
            "bed_clear": printer["bed_clear"], "attention": printer["attention"],
            "reserved_by": printer["reserved_by"],
            "reserved_until": printer["reserved_until"]}


@router.post("/{printer_id}/bed_cleared", response_model=PrinterOut)
async def bed_cleared(printer_id: str, node: NodeDep, who: Operator,
                      idempotency_key: IdempotencyKey = None) -> Any:
    """The finished print was taken off the bed: the printer may receive jobs again."""
    return await commit(node, Op.PRINTER_BED_CLEARED, {"id": printer_id}, idempotency_key, who)


@router.post("/{printer_id}/reservation", response_model=PrinterOut)
async def reserve(printer_id: str, body: ReservationIn, node: NodeDep, who: Operator,
                  idempotency_key: IdempotencyKey = None) -> Any:
    """Reserve the printer for a holder; the scheduler skips it until it expires or is released."""
    until = time.time() + body.duration_seconds
    return await commit(node, Op.PRINTER_RESERVE,
                        {"id": printer_id, "holder": body.holder, "until": until},
                        idempotency_key, who)


@router.delete("/{printer_id}/reservation", response_model=PrinterOut)
async def release(printer_id: str, node: NodeDep, who: Operator,
                  idempotency_key: IdempotencyKey = None) -> Any:
    """End the printer's reservation."""
    return await commit(node, Op.PRINTER_RELEASE, {"id": printer_id}, idempotency_key, who)
