"""Domain errors raised inside apply: a rejected command changes nothing."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a rule; `kind` maps to an HTTP status at the edge."""

    kind = "rule"

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str | None]:
        """The error as plain data (kind, code, message, field)."""
        return {"kind": self.kind, "code": self.code, "message": self.message, "field": self.field}


class InvalidCommand(DomainError):
    """The command's arguments are malformed (missing, wrong type, out of range)."""

    kind = "invalid"


class NotFound(DomainError):
    """The command names an entity that does not exist."""

    kind = "not_found"


class RuleViolation(DomainError):
    """The command is well formed but breaks a rule of the farm (weight, transition)."""

    kind = "rule"


class Forbidden(DomainError):
    """The command's actor may not do this (role, ownership, disabled account)."""

    kind = "forbidden"


class NewerData(Exception):
    """The log or a snapshot holds what only a newer release understands: the node stops
    (exit status 2) instead of applying it, so it never diverges from the nodes that can."""
