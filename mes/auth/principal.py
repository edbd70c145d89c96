"""Who a request acts for, and the rules of the three roles."""

from __future__ import annotations

from dataclasses import dataclass

from mes.state.users import RANK


@dataclass(frozen=True)
class Principal:
    """An authenticated user: id, name, role and the token that proved it (if any)."""

    user_id: str
    name: str
    role: str
    token_id: str | None = None

    def at_least(self, role: str) -> bool:
        """Whether this user's role includes `role` (admin > operator > user)."""
        return RANK.get(self.role, 0) >= RANK[role]

    @property
    def staff(self) -> bool:
        """Operators and admins act on every job; users only on their own."""
        return self.at_least("operator")
