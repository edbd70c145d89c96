"""A state machine's printers placed on nodes the way the leader does it, for unit tests."""

from __future__ import annotations

import time
from typing import Any

from mes.state.machine import StateMachine
from mes.state.ops import Op

NODE = "127.0.0.1:7001"
OTHER = "127.0.0.1:7002"


def do(machine: StateMachine, op: str, **args: Any) -> Any:
    """Apply one command; it must succeed."""
    outcome = machine.apply({"op": op, "args": args, "rid": None, "ts": time.time()})
    assert outcome.ok, (op, outcome.error)
    return outcome.value


def leader_epoch(machine: StateMachine) -> int:
    """The current leader epoch (one is begun if none was)."""
    value = machine.read(lambda c: c.exec_driver_sql("SELECT epoch FROM leadership").scalar())
    return int(value) if value else int(do(machine, Op.LEADER_BEGIN, leader="test")["epoch"])


def epoch_of(machine: StateMachine, printer_id: str) -> int:
    """The printer's assignment epoch."""
    value = machine.read(lambda c: c.exec_driver_sql(
        "SELECT epoch FROM assignments WHERE printer_id = ?", (printer_id,)).scalar())
    assert value is not None, f"printer {printer_id} has no assignment"
    return int(value)


def place(machine: StateMachine, printer_id: str, node: str = NODE) -> int:
    """Give `printer_id` to `node` (renewing its lease), handing it over from a live node
    first if needed; returns its new assignment epoch."""
    do(machine, Op.NODE_LEASE, node=node)
    epoch = epoch_of(machine, printer_id)
    value = do(machine, Op.SHARD_ASSIGN, leader_epoch=leader_epoch(machine), now=time.time(),
               moves=[{"printer_id": printer_id, "epoch": epoch, "node": node}])
    if value["moves"][printer_id] == "releasing":
        do(machine, Op.SHARD_RELEASE, printer_id=printer_id, epoch=epoch)
    return epoch_of(machine, printer_id)
