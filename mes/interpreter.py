"""Interpreter settings for a node process: its event loop shares the GIL with the Raft
thread and the read threads, and allocates fast (1,000 printers polled a second).

Measured with `bench/workers.py` (1,000 emulated printers, one node): with CPython's 5 ms
switch interval the loop, which gives the GIL up on every socket call, waited up to 5 ms to
get it back each time another thread ran Python code; a third to a half of the printers'
ticks started more than 50 ms late though the loop's own probes were on time. At 0.5 ms
no tick was more than 100 ms late in steady state. A first-generation threshold of 10,000
objects (700 by default) cut the collector's pauses from 3-4 % of the time to about 1 %.

Measured again with the node's OPC UA server on, as a user runs it (issue 20 §5), each
setting apart in one run (`bench/workers.py --baseline --each-setting`): both p50 33 ms,
p99 200 ms, GC paused 0.67 s in 20 s; threshold only p50 49 ms, p99 219 ms, 0.94 s;
switch interval only p50 107 ms, p99 354 ms, 2.0 s; neither p50 102 ms, p99 279 ms, 1.9 s.
The threshold earns its place alone; the switch interval only beside it.

Full collections (the oldest generation) are not the interpreter's to start: with 1,000
printers and 20,000 queued jobs mirrored in OPC UA, `bench/big_orders.py` measured 6-7 of
them per node in 80 s at 1.2-1.8 s each, every one stopping every thread of the process. A
leader stopped that long loses its followers (the term went from 1 to 6-9 per run); without
OPC UA's heap there were none and the term held. So the third threshold is out of reach
and mes.full_collections runs them on a schedule, where they cannot cost a leader.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL = 0.0005
# The third: no full collection by the interpreter (gc counts gen-1 collections in a C int).
GC_THRESHOLDS = (10_000, 10, 2**31 - 1)


def tune_for_node() -> None:
    """Apply the node's interpreter settings (the server calls this once at start)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.set_threshold(*GC_THRESHOLDS)
