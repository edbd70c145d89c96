"""Request and response bodies of users, tokens, orders and the audit log."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from mes.api.schemas import EntityId, PrintJobCreate, Text200, Timestamp, _Input
from mes.state.users import EMAIL

Role = Literal["user", "operator", "admin"]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$")]
Email = Annotated[str, Field(max_length=320, pattern=EMAIL.pattern)]
Password = Annotated[str, Field(min_length=8, max_length=1024, description=(
    "for the web page's login and OPC UA; stored only as an argon2id hash"))]


class UserCreate(_Input):
    """A new user (admins only)."""

    id: EntityId | None = None
    name: Name
    email: Email | None = None
    role: Role = "user"
    password: Password | None = None


class UserUpdate(_Input):
    """Fields to change; users may change their own name, e-mail and password."""

    name: Name | None = None
    email: Email | None = None
    role: Role | None = None
    disabled: bool | None = None
    password: Password | None = None


class UserOut(BaseModel):
    """A user, without any secret."""

    id: str
    name: str
    email: str | None
    role: Role
    disabled: bool
    has_password: bool
    oidc_subject: str | None
    created_at: Timestamp
    updated_at: Timestamp


class TokenCreate(_Input):
    """A new API token for the caller (admins: for `user_id`)."""

    name: Name
    user_id: EntityId | None = Field(None, description="admins only: whose token it is")
    expires_in_seconds: Annotated[int, Field(ge=60, le=10 * 365 * 24 * 3600)] | None = Field(
        None, description="omit for a token that does not expire")


class TokenOut(BaseModel):
    """A token's record; the token itself is shown only once, at creation."""

    id: str
    user_id: str
    name: str
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None = Field(
        None, description="recorded at most once a minute per node")
    revoked_at: Timestamp | None


class TokenCreatedOut(TokenOut):
    """The new token: keep `token`, it is not shown again."""

    token: str


class OrderCreate(_Input):
    """One or more jobs submitted together; all are created or none."""

    id: EntityId | None = None
    name: Text200 | None = None
    jobs: Annotated[list[PrintJobCreate], Field(min_length=1, max_length=100)]


class OrderJob(BaseModel):
    """A job of an order and its status."""

    id: str
    status: str


class OrderOut(BaseModel):
    """An order; its status follows its jobs (Running, Queued, Done, else Canceled)."""

    id: str
    owner_id: str
    name: str
    status: str
    job_counts: dict[str, int]
    jobs: list[OrderJob]
    created_at: Timestamp


class AuditOut(BaseModel):
    """One applied command made at a user's request."""

    seq: int
    at: Timestamp
    actor: str
    op: str
    target: str | None
