"""Notifications inside apply: webhooks, and the deliveries derived from each command.

`derive` runs after every handler in the same transaction. It turns what the command did
(job status changes, a printer needing attention, a printer's state turning error/offline)
into notification types, and for each matching webhook (and each job owner with an e-mail
address) inserts a pending delivery whose id comes from the command's Raft index, so every
node holds the same rows. The leader's delivery loop (mes/notify/) sends them and commits
`delivery.result`; this module decides retries, backoff and giving up, deterministically.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update

from mes.state import queries
from mes.state.args import Args
from mes.state.context import ApplyContext
from mes.state.errors import InvalidCommand, NotFound, RuleViolation
from mes.state.ops import Op
from mes.state.prepared import Prepared
from mes.state.tables import deliveries, printer_alerts, printer_status, webhooks
from mes.state.urls import url_problem
from mes.state.users import get_user

# The notification types a webhook may subscribe to ("*": every type).
TYPES = ("job.created", "job.started", "job.done", "job.failed", "job.canceled",
         "printer.attention", "printer.error", "printer.offline")
# The job owner's e-mail is sent for these (when SMTP_URL is set on the leader).
MAIL_TYPES = ("job.done", "job.failed", "job.canceled")
ALERT_STATES = {"error": "printer.error", "offline": "printer.offline"}
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=_\-]{16,120}$")
MAX_WEBHOOKS = 100
MAX_FILTER = 100
# Finished deliveries are kept this long (seconds) for the API, then pruned.
RETENTION = 7 * 24 * 3600.0
_JOB_FIELDS = ("id", "status", "owner_id", "order_id", "printer_id", "assigned_printer_id",
               "filament_id", "filepath", "last_error", "from_server")
_PRINTER_FIELDS = ("id", "company", "model", "group", "attention", "bed_clear")


def webhook_url_problem(value: Any) -> str | None:
    """Why `value` is not an acceptable webhook URL: http(s), no user info or fragment;
    unlike a printer URL it may carry a query (receivers often take a token there)."""
    if not isinstance(value, str):
        return "must be text"
    base, _, query = value.partition("?")
    if any(not 33 <= ord(c) <= 126 for c in query) or "#" in query:
        return "has whitespace, control, non-ASCII or fragment characters in its query"
    problem = url_problem(base)
    if problem is not None and "user info" in problem:
        return "has user info (user:password@); put a token in the query or path instead"
    return problem


def _string_list(args: Args, name: str, allowed: tuple[str, ...] | None) -> list[str]:
    value = args.raw(name)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_FILTER:
        raise InvalidCommand("invalid_type", f"{name} must be a list of at most {MAX_FILTER}",
                             name)
    for item in value:
        if not isinstance(item, str) or (allowed is not None and item not in allowed):
            options = ", ".join(allowed) if allowed else "ids"
            raise InvalidCommand("invalid_choice", f"{name}: {item!r} is not one of {options}",
                                 name)
        if allowed is None:
            Args({name: item}).ident(name)
    return sorted(set(value))


def create_webhook(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Register a webhook (operators): URL, secret, notification types and printers."""
    args.reject_unknown(("id", "url", "secret", "types", "printer_ids", "description"))
    webhook_id = args.ident("id")
    url = args.raw("url")
    problem = webhook_url_problem(url)
    if problem is not None:
        raise InvalidCommand("invalid_url", f"url {problem}", "url")
    secret = args.pattern("secret", SECRET, "whsec_ and 16-120 base64 characters",
                          nullable=False)
    types = _string_list(args, "types", (*TYPES, "*"))
    if not types:
        raise InvalidCommand("missing_field", "types must name at least one type (or '*')",
                             "types")
    printer_ids = _string_list(args, "printer_ids", None)
    description = args.text("description", 500, required=False)
    assert webhook_id is not None
    existing = get_webhook(ctx.conn, webhook_id)
    if existing is not None:
        raise RuleViolation("already_exists", f"webhook {webhook_id!r} already exists", "id")
    count = ctx.conn.execute(select(func.count()).select_from(webhooks)).scalar_one()
    if count >= MAX_WEBHOOKS:
        raise RuleViolation("too_many_webhooks", f"at most {MAX_WEBHOOKS} webhooks", "url")
    ctx.conn.execute(insert(webhooks).values(
        id=webhook_id, url=url, secret=secret, types=json.dumps(types),
        printer_ids=json.dumps(printer_ids),
        description=description if isinstance(description, str) else "",
        created_by=ctx.actor, created_at=ctx.ts))
    ctx.changed("webhook", webhook_id, "created")
    found = get_webhook(ctx.conn, webhook_id)
    assert found is not None
    return found


def delete_webhook(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Remove a webhook and its deliveries (pending ones are not sent)."""
    args.reject_unknown(("id",))
    webhook_id = args.ident("id")
    found = get_webhook(ctx.conn, webhook_id or "")
    if found is None:
        raise NotFound("webhook_not_found", f"webhook {webhook_id!r} does not exist", "id")
    ctx.conn.execute(delete(deliveries).where(deliveries.c.webhook_id == webhook_id))
    ctx.conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
    ctx.changed("webhook", found["id"], "deleted")
    return found


def get_webhook(conn: Any, webhook_id: str) -> dict[str, Any] | None:
    """One webhook with its secret and decoded filters, or None."""
    row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
    return _webhook(row) if row else None


_WEBHOOKS = Prepared(select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id))


def list_webhooks(conn: Any) -> list[dict[str, Any]]:
    """Every webhook (with secrets) by creation time."""
    rows = _WEBHOOKS.run(conn).all()
    return [_webhook(r) for r in rows]


def _webhook(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["types"] = json.loads(data["types"])
    data["printer_ids"] = json.loads(data["printer_ids"])
    return data


def delivery_result(ctx: ApplyContext, args: Args) -> dict[str, Any]:
    """Record the leader's attempts: done, skipped, or an error retried with exponential
    backoff (`retry_base` doubling up to `retry_cap`) until `max_age` after creation."""
    args.reject_unknown(("results", "retry_base", "retry_cap", "max_age"))
    base = args.number("retry_base", 0.001, 86_400)
    cap = args.number("retry_cap", 0.001, 86_400)
    max_age = args.number("max_age", 0, 30 * 86_400)
    results = args.raw("results")
    if not isinstance(results, list) or len(results) > 1000:
        raise InvalidCommand("invalid_results", "results must be a list", "results")
    changed = 0
    for raw in results:
        item = Args(raw)
        delivery_id = item.text("id", 64)
        result = item.choice("result", ("ok", "error", "skip"))
        at = item.number("at", 0, 1e12)
        code = item.integer("status_code", 0, 999, required=False)
        error = item.text("error", 1000, required=False, nullable=True)
        row = ctx.conn.execute(select(deliveries).where(
            deliveries.c.id == delivery_id)).first()
        if row is None or row.status != "pending":
            continue  # another leader's result came first, or the webhook was removed
        attempts = row.attempts + (0 if result == "skip" else 1)
        values: dict[str, Any] = {
            "attempts": attempts, "last_attempt_at": at,
            "last_status_code": code if isinstance(code, int) else None,
            "last_error": error if isinstance(error, str) else None}
        if result in ("ok", "skip"):
            values.update(status="done" if result == "ok" else "skipped", finished_at=at)
        else:
            delay = min(cap, base * 2 ** min(attempts - 1, 60))
            if at + delay - row.created_at > max_age:
                values.update(status="failed", finished_at=at)
            else:
                values["next_at"] = at + delay
        ctx.conn.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                         .values(**values))
        ctx.changed("delivery", delivery_id, "updated")
        changed += 1
    ctx.conn.execute(delete(deliveries).where(deliveries.c.finished_at < ctx.ts - RETENTION))
    return {"recorded": changed}


def derive(ctx: ApplyContext, op: str, args: Args) -> None:
    """Insert the deliveries this command's changes call for (see the module's text)."""
    if not ctx.transitions and op not in (Op.PRINTER_ATTENTION, Op.PRINTER_TELEMETRY):
        return
    hooks = list_webhooks(ctx.conn)
    notices = _notices(ctx, op, args, bool(hooks))
    if not notices:
        return
    counter = 0
    for kind, subject, printer_id, data in notices:
        body = json.dumps({"type": kind, "timestamp": _iso(ctx.ts), "index": ctx.index,
                           "data": data}, sort_keys=True, separators=(",", ":"))
        for hook in hooks:
            if ("*" in hook["types"] or kind in hook["types"]) and (
                    not hook["printer_ids"] or printer_id in hook["printer_ids"]):
                counter = _add(ctx, counter, "webhook", hook["id"], hook["url"], kind, body)
        if kind in MAIL_TYPES and subject.get("owner_id"):
            owner = get_user(ctx.conn, subject["owner_id"])
            if owner is not None and owner["email"] and not owner["disabled"]:
                mail = json.dumps(_mail(kind, subject, owner), sort_keys=True)
                counter = _add(ctx, counter, "email", None, owner["email"], kind, mail)


def _add(ctx: ApplyContext, counter: int, kind: str, webhook_id: str | None, target: str,
         notice: str, payload: str) -> int:
    if ctx.index:
        delivery_id = f"msg_{ctx.index}_{counter}"
    else:  # applied outside Raft (tests of the machine alone): the next free sequence number
        last = ctx.conn.execute(select(func.max(deliveries.c.seq))).scalar()
        delivery_id = f"msg_0_{(last or 0) + 1}"
    ctx.conn.execute(insert(deliveries).values(
        id=delivery_id, kind=kind, webhook_id=webhook_id, target=target, type=notice,
        payload=payload, status="pending", attempts=0, created_at=ctx.ts, next_at=ctx.ts))
    ctx.changed("delivery", delivery_id, "created")
    return counter + 1


Notice = tuple[str, dict[str, Any], str | None, dict[str, Any]]


def _notices(ctx: ApplyContext, op: str, args: Args, hooks: bool) -> list[Notice]:
    notices: list[Notice] = []
    for job_id, before, after in ctx.transitions:
        kind = _job_notice(op, before, after)
        wanted = kind is not None and (hooks or kind in MAIL_TYPES)
        job = queries.get_job(ctx.conn, job_id) if wanted else None
        if kind and job is not None:
            data = {k: job.get(k) for k in _JOB_FIELDS}
            notices.append((kind, job, job["assigned_printer_id"] or job["printer_id"], data))
    if op == Op.PRINTER_ATTENTION and hooks:
        printer = queries.get_printer(ctx.conn, str(args.raw("id")))
        if printer is not None:
            data = {k: printer.get(k) for k in _PRINTER_FIELDS}
            notices.append(("printer.attention", {}, printer["id"], data))
    if op == Op.PRINTER_TELEMETRY:  # always: the alert table must follow every state
        notices.extend(_printer_alerts(ctx))
    return notices


def _job_notice(op: str, before: str | None, after: str) -> str | None:
    if before is None:
        return "job.created" if after == "Queued" else "job.started"
    if before == after:
        return None
    if after == "Canceled":
        # The worker found the print gone or stopped at the printer: it failed.
        return "job.failed" if op == Op.JOB_LOST else "job.canceled"
    return {"Running": "job.started", "Done": "job.done"}.get(after)


_STATE_OF = Prepared(select(printer_status.c.state).where(
    printer_status.c.printer_id == bindparam("id")))
_ALERT_OF = Prepared(select(printer_alerts.c.state).where(
    printer_alerts.c.printer_id == bindparam("id")))


def _printer_alerts(ctx: ApplyContext) -> list[Notice]:
    ids = {e.entity_id for e in ctx.events if e.entity == "printer_status"}
    if not ids:
        return []
    # Printers in a bad state now, and those that were: by id while they are few, else
    # both small sets whole.
    if len(ids) <= queries.FEW:
        now = {pid: state for pid in ids
               if (state := _STATE_OF.run(ctx.conn, {"id": pid}).scalar()) in ALERT_STATES}
        seen = {pid: state for pid in ids
                if (state := _ALERT_OF.run(ctx.conn, {"id": pid}).scalar()) is not None}
    else:
        now = dict(ctx.conn.execute(
            select(printer_status.c.printer_id, printer_status.c.state)
            .where(printer_status.c.state.in_(sorted(ALERT_STATES)))).all())
        seen = dict(ctx.conn.execute(select(printer_alerts.c.printer_id,
                                            printer_alerts.c.state)).all())
    notices: list[Notice] = []
    for printer_id in sorted(ids):
        state, before = now.get(printer_id), seen.get(printer_id)
        if state == before:
            continue
        if before is not None:
            ctx.conn.execute(delete(printer_alerts).where(
                printer_alerts.c.printer_id == printer_id))
        if state is not None:
            ctx.conn.execute(insert(printer_alerts).values(printer_id=printer_id, state=state))
            printer = queries.get_printer(ctx.conn, printer_id)
            data = {k: (printer or {}).get(k) for k in _PRINTER_FIELDS}
            data.update(id=printer_id, state=state)
            notices.append((ALERT_STATES[state], {}, printer_id, data))
    return notices


_MAIL_TEXT = {
    "job.done": ("Your print {name} is done: ready to collect",
                 "Your print job {id} ({name}) finished on printer {printer}. "
                 "It is ready to collect."),
    "job.failed": ("Your print {name} failed",
                   "Your print job {id} ({name}) failed on printer {printer}: {error}"),
    "job.canceled": ("Your print {name} was canceled",
                     "Your print job {id} ({name}) was canceled."),
}


def _mail(kind: str, job: dict[str, Any], owner: dict[str, Any]) -> dict[str, str]:
    subject, text = _MAIL_TEXT[kind]
    name = str(job["filepath"]).rsplit("/", 1)[-1]
    fields = {"id": job["id"], "name": name,
              "printer": job["assigned_printer_id"] or job["printer_id"] or "-",
              "error": job["last_error"] or "the print was lost at the printer"}
    return {"to_name": owner["name"], "subject": subject.format(**fields),
            "text": f"Hello {owner['name']},\n\n{text.format(**fields)}\n\n-- the print farm\n"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
