"""Reports failed sign-ins to the replicated audit log, a few at a time: counted here per
account, source and interface, and committed as one command every REPORT_INTERVAL seconds,
so a flood of wrong passwords costs the cluster one small write per interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mes.raft.writer import NoLeader
from mes.state.ops import Op
from mes.state.sign_in_audit import INTERFACES, MAX_REPORTED
from mes.versions import NotUpgraded

log = logging.getLogger(__name__)

REPORT_INTERVAL = 5.0
Submit = Callable[[str, Mapping[str, Any]], Awaitable[Any]]
Key = tuple[str, str | None, str]


class FailedSignIns:
    """Failed sign-ins not yet in the audit log, and the loop that reports them."""

    def __init__(self, submit: Submit, interval: float = REPORT_INTERVAL) -> None:
        self._submit = submit
        self._interval = interval
        self._counts: dict[Key, int] = {}
        self.dropped = 0

    def failed(self, account: str, source: str | None, interface: str) -> None:
        """Count one failure (`account`: a user id, or `?name` for a name no user has)."""
        key = (account[:64], source[:64] if source else None, interface)
        if key not in self._counts and len(self._counts) >= MAX_REPORTED - len(INTERFACES):
            key = ("?", None, interface)  # beyond the bound: counted, not told apart
        self._counts[key] = self._counts.get(key, 0) + 1

    async def report(self) -> int:
        """Commit what was counted since the last report; the number of entries written."""
        if not self._counts:
            return 0
        counts, self._counts = self._counts, {}
        failures = [{"account": account, "source": source, "interface": interface,
                     "count": count} for (account, source, interface), count in counts.items()]
        try:
            outcome = await self._submit(Op.SIGN_IN_FAILED, {"failures": failures})
        except NotUpgraded:
            self.dropped += len(failures)  # a cluster below level 4: the log line stays
            return 0
        except NoLeader:
            for key, count in counts.items():  # try again with the next report
                self._counts[key] = self._counts.get(key, 0) + count
            return 0
        if getattr(outcome, "error", None) is not None:
            log.error("failed sign-ins not recorded: %s", outcome.error)
            return 0
        return len(failures)

    async def run(self) -> None:
        """Report every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.report()
            except Exception:  # never let the audit stop sign-in
                log.exception("reporting failed sign-ins")
