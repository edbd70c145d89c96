"""Request and response bodies of webhooks and deliveries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from mes.api.schemas import EntityId, Timestamp, _Input
from mes.state.notifications import TYPES

NoticeType = Literal[(*TYPES, "*")]  # type: ignore[valid-type]


class WebhookCreate(_Input):
    """A webhook: where to POST which notification types (and for which printers)."""

    id: EntityId | None = None
    url: Annotated[str, Field(min_length=1, max_length=2048, description=(
        "http(s) URL the farm POSTs to; inside WEBHOOK_NETWORKS when that is set"))]
    types: Annotated[list[NoticeType], Field(min_length=1, max_length=100, description=(
        "notification types to send, or ['*'] for all"))]
    printer_ids: Annotated[list[EntityId], Field(max_length=100, description=(
        "only notifications about these printers (empty: every printer)"))] = []
    description: Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x1f]*$")] = ""


class WebhookOut(BaseModel):
    """A webhook, without its secret."""

    id: str
    url: str
    types: list[str]
    printer_ids: list[str]
    description: str
    created_by: str | None
    created_at: Timestamp


class WebhookCreatedOut(WebhookOut):
    """A new webhook with its signing secret, shown only this once."""

    secret: str = Field(description="whsec_...: verify each delivery's webhook-signature "
                        "with it (Standard Webhooks); shown only at creation")


class WebhookTestOut(BaseModel):
    """What a test notification to a webhook came to (nothing is recorded)."""

    id: str = Field(description="the webhook-id header it was sent with")
    result: Literal["ok", "error"]
    status_code: int | None = Field(None, description="the receiver's HTTP status")
    error: str | None = Field(None, description="why it failed, in words")
    at: Timestamp


class DeliveryOut(BaseModel):
    """One notification and what became of it."""

    id: str = Field(description="the webhook-id header: the same on every attempt")
    kind: Literal["webhook", "email"]
    webhook_id: str | None
    target: str
    type: str
    status: Literal["pending", "done", "failed", "skipped"]
    attempts: int
    created_at: Timestamp
    next_at: Timestamp | None
    last_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    finished_at: Timestamp | None
    payload: dict[str, Any]
