"""Write tests/slow.txt from pytest's `--durations=0` report on standard input: every test
whose set-up, call and teardown together took at least THRESHOLD seconds. Those are marked
`slow` (tests/tiers.py) and left out of the everyday tier.

    .venv/bin/pytest -m "not process and not cluster" --durations=0 --durations-min=0.5 \\
        | .venv/bin/python tests/slow_list.py > tests/slow.txt
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict

THRESHOLD = 1.5
LINE = re.compile(r"^\s*([0-9.]+)s\s+(setup|call|teardown)\s+(\S+::\S+)")


def main() -> None:
    """Read the report, print the list."""
    totals: dict[str, float] = defaultdict(float)
    for line in sys.stdin:
        match = LINE.match(line)
        if match:
            seconds, _phase, nodeid = match.groups()
            totals[nodeid] += float(seconds)
    slow = sorted((nodeid for nodeid, total in totals.items() if total >= THRESHOLD))
    print(f"# Tests of the node and unit tiers that take {THRESHOLD:g} s or more on the "
          "2-core CI machine (tests/slow_list.py); marked slow.")
    for nodeid in slow:
        print(f"{nodeid}  # {totals[nodeid]:.1f} s")


if __name__ == "__main__":
    main()
