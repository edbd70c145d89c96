"""`/api/v1/webhooks` and `/api/v1/deliveries`: notifications to other systems (operators)."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query, Request, Response

from mes.api.auth import Operator, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.errors import ApiError
from mes.api.notify_schemas import (
    DeliveryOut,
    WebhookCreate,
    WebhookCreatedOut,
    WebhookOut,
    WebhookTestOut,
)
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, paged
from mes.networks import AddressRefused, HostUnresolved, checked_addresses
from mes.notify.senders import WebhookSender
from mes.notify.signing import new_secret
from mes.state.delivery_reads import deliveries_page
from mes.state.notifications import get_webhook, list_webhooks, webhook_url_problem
from mes.state.ops import Op

router = authenticated_router("/webhooks", "webhooks")
# The type of the notification POST /webhooks/{id}/test sends (no webhook subscribes to it).
TEST_TYPE = "webhook.test"
deliveries_router = authenticated_router("/deliveries", "webhooks")


def _public(hook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hook.items() if k != "secret"}


@router.post("", status_code=201, response_model=WebhookCreatedOut)
async def create_webhook(body: WebhookCreate, node: NodeDep, who: Operator,
                         idempotency_key: IdempotencyKey = None) -> Any:
    """Register a webhook (operators). The answer's `secret` is shown only this once."""
    problem = webhook_url_problem(body.url)
    if problem is not None:
        raise ApiError(422, "invalid_url", f"url {problem}", "url")
    targets = node.settings.webhook_targets
    if not targets.unrestricted:
        parts = body.url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        host, _, port = parts.rpartition(":") if not parts.endswith("]") else (parts, "", "")
        if not port.isdigit():
            host, port = parts, ""
        try:
            await checked_addresses(host, int(port or 443), targets)
        except HostUnresolved:
            if targets.networks:
                raise ApiError(422, "address_refused", "url: host name does not resolve "
                               "(WEBHOOK_NETWORKS is set)", "url") from None
        except AddressRefused as exc:
            message = str(exc).replace("PRINTER_NETWORKS", "WEBHOOK_NETWORKS")
            raise ApiError(422, "address_refused", f"url: {message}", "url") from None
    secret = new_secret()
    args: dict[str, Any] = {"id": body.id or new_id(idempotency_key, who), "url": body.url,
                            "secret": secret, "types": list(body.types),
                            "printer_ids": body.printer_ids, "description": body.description}
    value = await commit(node, Op.WEBHOOK_CREATE, args, idempotency_key, who)
    if value["secret"] != secret:
        raise ApiError(409, "secret_already_shown", "this Idempotency-Key already made a "
                       "webhook, whose secret was shown once; delete it and make another")
    return value


@router.get("", response_model=list[WebhookOut])
async def list_all(node: NodeDep, _: Operator) -> Any:
    """Every webhook (at most 100), oldest first; never their secrets."""
    return [_public(h) for h in await read(node, list_webhooks)]


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_one(webhook_id: str, node: NodeDep, _: Operator) -> Any:
    """One webhook, without its secret."""
    return _public(found(await read(node, lambda c: get_webhook(c, webhook_id)), "webhook",
                         webhook_id))


@router.post("/{webhook_id}/test", response_model=WebhookTestOut)
async def test_webhook(webhook_id: str, node: NodeDep, _: Operator) -> Any:
    """Send the webhook a signed `webhook.test` notification now, from this node, with the
    same network rules and signature as every delivery, and answer what came of it. It is
    not a delivery: nothing is recorded, and it is not sent again."""
    hook = found(await read(node, lambda c: get_webhook(c, webhook_id)), "webhook",
                 webhook_id)
    now = time.time()
    message_id = f"msg_test_{secrets.token_hex(8)}"
    body = json.dumps({"type": TEST_TYPE, "timestamp": datetime.fromtimestamp(now, UTC)
                       .isoformat(), "index": None, "data": {"webhook_id": webhook_id,
                       "message": "a test notification from mes"}},
                      sort_keys=True, separators=(",", ":"))
    settings = node.settings.notify
    sender = WebhookSender(settings.webhook_targets, settings.webhook_timeout)
    try:
        attempt = await sender.send({"id": message_id, "payload": body,
                                     "secret": hook["secret"], "target": hook["url"]})
    finally:
        await sender.aclose()
    return {"id": message_id, "result": attempt.result, "status_code": attempt.status_code,
            "error": attempt.error, "at": attempt.at}


@router.delete("/{webhook_id}", response_model=WebhookOut)
async def delete_webhook(webhook_id: str, node: NodeDep, who: Operator,
                         idempotency_key: IdempotencyKey = None) -> Any:
    """Remove a webhook and its deliveries; pending ones are not sent."""
    await get_one(webhook_id, node, who)
    return _public(await commit(node, Op.WEBHOOK_DELETE, {"id": webhook_id}, idempotency_key,
                                who))


Status = Literal["pending", "done", "failed", "skipped"]


async def _page(request: Request, response: Response, node: NodeDep, webhook_id: str | None,
                kind: str | None, status: str | None, limit: int, cursor: str | None) -> Any:
    after = decode_cursor(cursor, int)
    rows = await read(node, lambda c: deliveries_page(c, webhook_id, kind, status,
                                                      after[0] if after else None, limit + 1))
    return paged(request, response, rows, limit, lambda r: [r["seq"]])


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
async def webhook_deliveries(
    request: Request, response: Response, webhook_id: str, node: NodeDep, who: Operator,
    status: Annotated[Status | None, Query()] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Any:
    """A webhook's deliveries, newest first: pending (with the next attempt's time), done,
    or failed after WEBHOOK_MAX_AGE of retries, with the last error."""
    await get_one(webhook_id, node, who)
    return await _page(request, response, node, webhook_id, None, status, limit, cursor)


@deliveries_router.get("", response_model=list[DeliveryOut])
async def all_deliveries(
    request: Request, response: Response, node: NodeDep, _: Operator,
    kind: Annotated[Literal["webhook", "email"] | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Any:
    """Every delivery (webhooks and e-mails to job owners), newest first."""
    return await _page(request, response, node, None, kind, status, limit, cursor)
