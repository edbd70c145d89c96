"""A printer's MachineryItemState (OPC 40001-1), derived as its utilisation state is.

The live value and its history (read from the state stretches of mes.state.intervals)
agree because both come from the same state: `utilization_state` is the Python twin of
`mes.state.intervals.state_expression` (tests/test_opcua_item_states.py compares them).
"""

from __future__ import annotations

from mes.state.intervals import UTILIZATION_STATES

# MachineryItemState of each utilisation state.
ITEM_STATE_OF = {"printing": "Executing", "paused": "NotExecuting", "idle": "NotExecuting",
                 "offline": "NotAvailable", "error": "OutOfService"}


def utilization_state(reported: str | None, attention: bool) -> str:
    """The state a printer counts as: its reported state, except that never reported
    counts as offline, finished as idle, and waiting for an operator as error unless it
    prints."""
    if attention and reported not in ("printing", "paused"):
        return "error"
    if reported == "finished":
        return "idle"
    return reported if reported in UTILIZATION_STATES else "offline"


def item_state(reported: str | None, attention: bool) -> str:
    """The printer's MachineryItemState."""
    return ITEM_STATE_OF[utilization_state(reported, attention)]
