"""The node's change-event stream: a bounded window of recent events, and live subscribers.

Every change event of the state machine gets the id `<index>-<n>`: the command's Raft log
index (the same on every node) and its position among that command's events. So a client
resumes on any node after the last id it saw, and loses or repeats nothing, as long as the
window still holds the events after it. Printer telemetry (`printer_status`) is live only:
it has no id, is not kept in the window, and is coalesced per printer for a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from mes.state.machine import Outcome
from mes.state.ops import Op
from mes.state.queries import owner_of

Key = tuple[int, int]
# A key after every event of its index (`<index>` without `-<n>`).
END = 2**31
_ID = re.compile(r"^(\d{1,18})(?:-(\d{1,9}))?$")
# Entities whose snapshot (the command's own result for that entity) rides along, each
# with a field that tells its records from other entities' (ids may coincide).
SNAPSHOT_ENTITIES = {"print_job": "filepath", "printer": "has_api_key",
                     "filament": "remaining_weight_in_grams", "order": "jobs"}
_SECRET_PARTS = ("secret", "hash", "password", "api_key", "token")
# Entities the `user` role sees: every printer and spool, and only their own jobs and orders.
USER_ENTITIES = frozenset({"printer", "printer_status", "filament"})
OWNED_ENTITIES = frozenset({"print_job", "order"})
# Changes of accounts and tokens: every open stream checks its token again before it
# delivers anything applied after one (a revoked, disabled or demoted reader stops there).
AUTH_ENTITIES = frozenset({"user", "api_token"})
OWNER_CACHE = 100_000


def parse_id(text: str) -> Key | None:
    """The key of an event id (`<index>-<n>` or `<index>`), or None if malformed."""
    match = _ID.match(text.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)) if match.group(2) is not None else END


def format_id(key: Key) -> str:
    """The SSE id of a key."""
    return str(key[0]) if key[1] == END else f"{key[0]}-{key[1]}"


@dataclass(frozen=True)
class StreamEvent:
    """One change event, encoded once for every subscriber."""

    key: Key | None  # None: live only (telemetry)
    entity: str
    entity_id: str
    owner: str | None
    data: str
    state: str | None = None  # telemetry: the printer's reported state
    state_changed: bool = False  # telemetry: a state other than its printer's last one

    @property
    def telemetry(self) -> bool:
        """Whether this is a printer's telemetry (no id, coalesced)."""
        return self.key is None


Visible = Callable[[StreamEvent], bool]


def visible_to(user_id: str, staff: bool) -> Visible:
    """The role filter: staff see every event; users see printers, spools and their own
    jobs and orders (never users, tokens, webhooks, deliveries or files)."""
    if staff:
        return lambda event: True
    return lambda event: event.entity in USER_ENTITIES or (
        event.entity in OWNED_ENTITIES and event.owner == user_id)


@dataclass(frozen=True)
class TelemetryView:
    """Which telemetry a stream wants: everything (the default), none, or that of some
    `printers` in full and of the others only when their state changes (`states`)."""

    every: bool = True
    printers: frozenset[str] = frozenset()
    states: bool = False

    def wants(self, event: StreamEvent) -> bool:
        """Whether to send this telemetry event."""
        if self.every or event.entity_id in self.printers:
            return True
        return self.states and event.state_changed


EVERY = TelemetryView()
NO_TELEMETRY = TelemetryView(every=False)


class Subscriber:
    """One open stream: a bounded queue, telemetry coalesced per printer, a wake-up."""

    def __init__(self, visible: Visible, telemetry: bool | TelemetryView,
                 capacity: int) -> None:
        self.visible = visible
        self.view = telemetry if isinstance(telemetry, TelemetryView) else (
            EVERY if telemetry else NO_TELEMETRY)
        self.telemetry = self.view.every or bool(self.view.printers) or self.view.states
        self.capacity = capacity
        self.queue: deque[StreamEvent] = deque()
        self.latest: dict[str, StreamEvent] = {}
        self.last_key: Key = (0, 0)
        self.wake = asyncio.Event()
        self.reload: str | None = None
        self.closing = False

    def offer(self, events: list[StreamEvent]) -> None:
        """Queue what this subscriber may see and has not seen (runs on the event loop)."""
        for event in events:
            if event.key is None:
                if self.telemetry and self.visible(event) and self.view.wants(event):
                    self.latest.pop(event.entity_id, None)  # re-inserted last: kept in order
                    self.latest[event.entity_id] = event
                    self.wake.set()
                continue
            if event.key <= self.last_key:
                continue
            self.last_key = event.key
            if not self.visible(event) and event.entity not in AUTH_ENTITIES:
                continue
            if len(self.queue) >= self.capacity:
                self.end("this client fell too far behind")
                return
            self.queue.append(event)
            self.wake.set()

    def end(self, reason: str | None) -> None:
        """Tell the stream to send `reload` with `reason` and close (None: close without
        reload, as at server shutdown: the client resumes elsewhere with its last id)."""
        if reason is None:
            self.closing = True
        elif self.reload is None:
            self.reload = reason
        self.wake.set()

    def take(self) -> list[StreamEvent]:
        """Everything queued, in order (telemetry last), emptying the queue."""
        events = list(self.queue)
        self.queue.clear()
        events.extend(self.latest.values())
        self.latest.clear()
        self.wake.clear()
        return events


class EventHub:
    """Receives every outcome (on pysyncobj's thread) and fans events out on the loop."""

    def __init__(self, read: Callable[[Callable[[Connection], Any]], Any], window: int,
                 capacity: int) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._window: deque[StreamEvent] = deque(maxlen=window)
        # Every event after this key that this node applied is in the window (None: none
        # applied yet since start or since a snapshot replaced the state).
        self._horizon: Key | None = None
        self._owners: OrderedDict[tuple[str, str], str | None] = OrderedDict()
        # Each printer's last reported state (telemetry), to mark the events that change it.
        self._states: dict[str, str] = {}
        self.last_index = 0
        self.capacity = capacity
        self._subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._index_changed: asyncio.Event | None = None
        self.closed = False
        self.published = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish to subscribers on `loop` from now on."""
        self._loop = loop
        self._index_changed = asyncio.Event()
        self.closed = False

    # --- on pysyncobj's thread -------------------------------------------------------

    def on_apply(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        """Record the outcome's events in the window and hand them to the loop."""
        if not outcome.index:
            return
        events = self._events(command, outcome) if outcome.events else []
        with self._lock:
            if self._horizon is None:
                self._horizon = (outcome.index - 1, END)
            for event in events:
                if event.key is None:
                    continue
                if len(self._window) == self._window.maxlen:
                    evicted = self._window[0].key
                    assert evicted is not None
                    self._horizon = evicted
                self._window.append(event)
            self.last_index = max(self.last_index, outcome.index)
        self._call(self._publish, events)

    def on_restore(self) -> None:
        """A snapshot replaced the state: history before it is unknown here."""
        with self._lock:
            self._window.clear()
            self._horizon = None
        self._call(self._end_all, "this node's state was replaced by a snapshot")

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _events(self, command: Mapping[str, Any], outcome: Outcome) -> list[StreamEvent]:
        op = command.get("op")
        ts = command.get("ts")
        value = outcome.value if isinstance(outcome.value, Mapping) else {}
        # The records the command returned: itself, and an order's jobs.
        records: dict[str, list[Mapping[str, Any]]] = {}
        nested = value.get("jobs")
        for record in [value, *(nested if isinstance(nested, list) else [])]:
            if isinstance(record, Mapping) and isinstance(record.get("id"), str):
                records.setdefault(record["id"], []).append(record)
        statuses = _statuses(command) if op == Op.PRINTER_TELEMETRY else {}
        result = []
        for n, change in enumerate(outcome.events):
            telemetry = change.entity == "printer_status"
            if telemetry and not self._subscribers:
                # Live only: nobody to tell; the state is kept, so that a later stream of
                # state changes is not told every printer's first report as a change.
                reported = statuses.get(change.entity_id)
                state = reported.get("state") if isinstance(reported, Mapping) else None
                if isinstance(state, str):
                    self._states[change.entity_id] = state
                continue
            key = None if telemetry else (outcome.index, n)
            payload: dict[str, Any] = {"entity": change.entity, "id": change.entity_id,
                                       "change": change.change, "op": op,
                                       "index": outcome.index, "ts": ts}
            snapshot = _snapshot(change.entity, records.get(change.entity_id, ()))
            if telemetry:
                payload["telemetry"] = True
                snapshot = statuses.get(change.entity_id)
            if snapshot is not None:
                payload["data"] = snapshot
            owner = self._owner(change.entity, change.entity_id, snapshot)
            state = snapshot.get("state") if telemetry and isinstance(snapshot, Mapping) else None
            changed = False
            if isinstance(state, str):
                changed = self._states.get(change.entity_id) != state
                self._states[change.entity_id] = state
            else:
                state = None
            result.append(StreamEvent(key, change.entity, change.entity_id, owner,
                                      json.dumps(payload, separators=(",", ":"),
                                                 default=str), state, changed))
        return result

    def _owner(self, entity: str, entity_id: str, snapshot: Mapping[str, Any] | None
               ) -> str | None:
        if entity not in OWNED_ENTITIES:
            return None
        cache_key = (entity, entity_id)
        if snapshot is not None and "owner_id" in snapshot:
            owner = snapshot["owner_id"]
        elif cache_key in self._owners:
            return self._owners[cache_key]
        else:  # owners never change: one read per job or order this node streams
            owner = self._read(lambda c: owner_of(c, entity, entity_id))
        self._owners[cache_key] = owner
        if len(self._owners) > OWNER_CACHE:
            self._owners.popitem(last=False)
        return str(owner) if owner is not None else None

    # --- on the event loop -----------------------------------------------------------

    def _publish(self, events: list[StreamEvent]) -> None:
        if self._index_changed is not None:
            self._index_changed.set()
            self._index_changed = asyncio.Event()
        if not events:
            return
        self.published += len(events)
        for subscriber in list(self._subscribers):
            subscriber.offer(events)

    def _end_all(self, reason: str | None) -> None:
        for subscriber in list(self._subscribers):
            subscriber.end(reason)

    async def wait_index(self, index: int, timeout: float) -> bool:
        """Wait until this node applied `index` (or `timeout` passed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.last_index < index and not self.closed:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._index_changed is None:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._index_changed.wait()
        return self.last_index >= index

    def subscribe(self, subscriber: Subscriber, after: Key | None
                  ) -> tuple[list[StreamEvent], str | None]:
        """Register a subscriber; return the window's events after `after` that it may see
        (its backlog) or a reason to reload instead."""
        with self._lock:
            if after is not None and (self._horizon is None or after < self._horizon):
                return [], "the events after this id are no longer kept on this node"
            if after is None:
                subscriber.last_key = (self.last_index, END)
                backlog = []
            else:
                backlog = [e for e in self._window if e.key is not None and e.key > after]
                subscriber.last_key = backlog[-1].key if backlog and backlog[-1].key else after
            self._subscribers.add(subscriber)
        return [e for e in backlog if subscriber.visible(e)], None

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber whose stream ended."""
        self._subscribers.discard(subscriber)

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)

    def close(self) -> None:
        """End every stream (server shutdown); safe from any thread."""
        self.closed = True
        self._call(self._end_all, None)


def _snapshot(entity: str, records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    marker = SNAPSHOT_ENTITIES.get(entity)
    for record in records:
        if marker is not None and marker in record:
            return {k: v for k, v in record.items()
                    if not any(part in k for part in _SECRET_PARTS) and k != "jobs"}
    return None


def _statuses(command: Mapping[str, Any]) -> dict[str, Any]:
    args = command.get("args")
    items = args.get("statuses") if isinstance(args, Mapping) else None
    if not isinstance(items, list):
        return {}
    return {str(s["printer_id"]): s for s in items
            if isinstance(s, Mapping) and "printer_id" in s}
