"""Every applied command carries its Raft log index, the same number on every node."""

from __future__ import annotations

from mes.node import FarmNode
from mes.state.ops import Op


async def test_outcomes_carry_increasing_raft_indexes(node: FarmNode) -> None:
    first = await node.writer.submit(Op.NOOP, {})
    second = await node.writer.submit(Op.NOOP, {})
    assert first.index > 0
    assert second.index > first.index
    # The node's applied index reached the second command's index exactly when it applied it.
    applied, _ = node.raft.read_at_applied(lambda: None)
    assert applied >= second.index


def test_apply_outside_raft_has_index_zero(node: FarmNode) -> None:
    outcome = node.machine.apply({"op": Op.NOOP, "args": {}, "ts": 1.0})
    assert outcome.index == 0
    assert node.machine.apply({"op": Op.NOOP, "args": {}, "ts": 1.0}, index=42).index == 42
