"""The leader's plan of which node drives which printer: a pure function, then its loop.

`plan` places each printer with a worker: a pinned printer (`hub` set) on its hub when the
hub has a live lease, else on nobody (it shows as unreachable; no other node may reach it);
a floating printer on a live node, spreading the load (pinned and floating printers alike)
evenly and moving as few printers as it can: printers stay where they are unless their node
is gone or a node holds more than one printer more than another.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slot:
    """One printer as the balancer sees it."""

    printer_id: str
    hub: str | None
    node: str | None
    epoch: int
    release: bool = False
    moving_to: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Slot:
        """From a row of mes.state.queries.shard_slots."""
        return cls(row["id"], row["hub"], row["node"], int(row["epoch"]), bool(row["release"]),
                   row["moving_to"])


@dataclass(frozen=True)
class Move:
    """Put printer `printer_id` (now at `epoch`) on `node` (None: on nobody)."""

    printer_id: str
    epoch: int
    node: str | None

    def as_dict(self) -> dict[str, Any]:
        """As it goes into a shard.assign command."""
        return {"printer_id": self.printer_id, "epoch": self.epoch, "node": self.node}


def plan(slots: Iterable[Slot], live: Collection[str]) -> list[Move]:
    """The moves that place every printer well over the `live` nodes (see the module)."""
    nodes = sorted(set(live))
    load = dict.fromkeys(nodes, 0)
    moves: list[Move] = []
    floating: list[Slot] = []
    for slot in sorted(slots, key=lambda s: s.printer_id):
        if slot.hub is not None:
            want = slot.hub if slot.hub in load else None
            if want is not None:
                load[want] += 1
            if _heading(slot) != want:
                moves.append(Move(slot.printer_id, slot.epoch, want))
        else:
            floating.append(slot)
    unplaced: list[Slot] = []
    movable: dict[str, list[Slot]] = {n: [] for n in nodes}
    for slot in floating:
        heading = _heading(slot)
        if heading in load:
            assert heading is not None
            load[heading] += 1
            if not slot.release:
                movable[heading].append(slot)
        else:
            unplaced.append(slot)
    if not nodes:
        return moves
    for slot in unplaced:
        target = min(nodes, key=lambda n: (load[n], n))
        load[target] += 1
        moves.append(Move(slot.printer_id, slot.epoch, target))
    while True:
        low = min(nodes, key=lambda n: (load[n], n))
        donors = [n for n in nodes if movable[n] and load[n] > load[low] + 1]
        if not donors:
            return moves
        high = max(donors, key=lambda n: (load[n], n))
        slot = movable[high].pop()
        load[high] -= 1
        load[low] += 1
        moves.append(Move(slot.printer_id, slot.epoch, low))


def _heading(slot: Slot) -> str | None:
    """Where a printer is, or is being handed over to."""
    return slot.moving_to if slot.release else slot.node


def silent_nodes(leases: Iterable[dict[str, Any]], heard: dict[str, tuple[int, float]],
                 now: float, lease_seconds: float) -> list[dict[str, Any]]:
    """The live leases not renewed for `lease_seconds` by the leader's clock.

    `heard` maps a node to (the lease seq last seen, when this node first saw it applied, by
    its own monotonic clock); it is updated here. A renewal this node has not seen before
    counts as heard now (a node that has just started gives every lease a whole term).
    """
    silent = []
    for lease in leases:
        if lease["expired"]:
            heard.pop(lease["node"], None)
            continue
        seen = heard.get(lease["node"])
        if seen is None or seen[0] != lease["seq"]:
            heard[lease["node"]] = (lease["seq"], now)
            continue
        if now - seen[1] > lease_seconds:
            silent.append({"node": lease["node"], "seq": lease["seq"],
                           "renewed_at": lease["renewed_at"],
                           "silent_for": round(now - seen[1], 3)})
    return silent
