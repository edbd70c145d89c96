"""How many examples a property test tries: the full count in CI (`CI=true`) or with
`MES_FULL_EXAMPLES=1`, a fifth of it (at least 10) in everyday runs."""

from __future__ import annotations

import os

from hypothesis import settings

FULL = os.environ.get("CI") == "true" or os.environ.get("MES_FULL_EXAMPLES") == "1"

# Tests without settings of their own: Hypothesis's 100 in full runs, 20 otherwise.
settings.register_profile("full", max_examples=100)
settings.register_profile("everyday", max_examples=20)
settings.load_profile("full" if FULL else "everyday")


def examples(count: int) -> int:
    """`count` in full runs; a fifth of it, at least 10, otherwise."""
    return count if FULL else max(10, count // 5)
