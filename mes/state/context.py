"""What a command handler gets: the connection, the command's time, and an event list."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection


@dataclass(frozen=True)
class ChangeEvent:
    """One entity that a command changed, for the mirrors (OPC UA, streams, workers)."""

    entity: str
    entity_id: str
    change: str  # created | updated | deleted


@dataclass
class ApplyContext:
    """The state a handler may touch: one transaction, the command's timestamp, its events."""

    conn: Connection
    ts: float
    events: list[ChangeEvent] = field(default_factory=list)
    # The user whose request carried the command and their role (None: the farm itself).
    actor: str | None = None
    actor_role: str | None = None
    # The command's Raft log index (0 outside Raft): deterministic ids of derived rows.
    index: int = 0
    # Job status changes of this command (job id, from, to), for the notifications.
    transitions: list[tuple[str, str | None, str]] = field(default_factory=list)

    @property
    def staff(self) -> bool:
        """Whether the command may act on anyone's jobs (the farm itself, operators, admins)."""
        return self.actor is None or self.actor_role in ("operator", "admin")

    def changed(self, entity: str, entity_id: str, change: str) -> None:
        """Record that `entity_id` of kind `entity` was created, updated or deleted."""
        self.events.append(ChangeEvent(entity, entity_id, change))
