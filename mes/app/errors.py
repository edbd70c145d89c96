"""The application layer's one error, raised to every interface."""

from __future__ import annotations

from typing import Any, Literal

# invalid: bad values; not_found: no such entity (or not the caller's); rule: the farm's
# rules refuse it now; forbidden: the role may not; quota: a per-user quota is reached;
# unavailable: no leader answered in time (the outcome is unknown: retry with `retry_key`),
# or this node cannot take writes now (nothing was submitted).
Kind = Literal["invalid", "not_found", "rule", "forbidden", "quota", "unavailable"]
KINDS: tuple[Kind, ...] = ("invalid", "not_found", "rule", "forbidden", "quota", "unavailable")


class DomainError(Exception):
    """A refusal with a `kind`, a stable `code`, a message and the field it concerns."""

    def __init__(self, kind: Kind, code: str, message: str, field: str | None = None,
                 retry_key: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.field = field
        # For `unavailable`: the idempotency key that makes a retry apply at most once.
        self.retry_key = retry_key

    @classmethod
    def from_outcome(cls, error: dict[str, Any]) -> DomainError:
        """The error of a command the state machine rejected (its kind, code and field)."""
        kind = error.get("kind")
        return cls(kind if kind in KINDS else "rule", str(error["code"]),
                   str(error["message"]), error.get("field"))

    def __repr__(self) -> str:
        return f"DomainError({self.kind!r}, {self.code!r}, {self.message!r})"
