"""Sign-in that cannot be flooded or guessed: one guard per node, for REST and OPC UA.

- At most CONCURRENT_CHECKS argon2 checks run at once and at most QUEUED more wait, of
  which at most PER_ACCOUNT_IN_LINE for one account and PER_SOURCE_IN_LINE from one source
  address; a sign-in beyond that is answered at once ("busy", retry after a second) instead
  of queueing behind a flood (40 wrong passwords delayed a correct one by 81 s).
- An account that failed ACCOUNT_FAILURES times in a row, and a source address that failed
  SOURCE_FAILURES times, wait before their next try: 1 s, doubling with each further
  failure, at most BACKOFF_CAP. A try during the wait is answered at once, without a hash,
  even with the right password (guessing gains nothing); a success clears the account.
- The memory of failures is bounded (MEMORY keys, the least recently failed forgotten).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from mes.auth.passwords import MAX_NAME, MAX_PASSWORD, Reader, find_user, verify
from mes.auth.principal import Principal

log = logging.getLogger(__name__)

CONCURRENT_CHECKS = 2
QUEUED = 8
# Checks in line at once for one account and for one source address: a flood against one
# account (or from one address) cannot fill the line that other accounts wait in.
PER_ACCOUNT_IN_LINE = 1
PER_SOURCE_IN_LINE = 4
ACCOUNT_FAILURES = 5
SOURCE_FAILURES = 20
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
MEMORY = 10_000



class TooManyAttempts(Exception):
    """Not checked now: the account or the source must wait, or the node is busy."""

    def __init__(self, message: str, retry_after: float, busy: bool = False) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))
        self.busy = busy  # only the line was full (no failure behind it)


class _Failures:
    """Consecutive failures and the end of the wait, per key, bounded in number."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        _count, until = self._seen.get(key, (0, 0.0))
        return max(0.0, until - now)

    def failed(self, key: str, now: float) -> None:
        count, _until = self._seen.pop(key, (0, 0.0))
        count += 1
        until = now + min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (count - self.threshold)) \
            if count >= self.threshold else 0.0
        self._seen[key] = (count, until)
        while len(self._seen) > MEMORY:
            self._seen.popitem(last=False)

    def clear(self, key: str) -> None:
        self._seen.pop(key, None)


class SignInGuard:
    """Checks a name and password, throttled as the module says."""

    def __init__(self, read: Reader, clock: Callable[[], float] = time.monotonic,
                 on_failure: Callable[[str, str | None, str], None] | None = None) -> None:
        self._read = read
        # Told of each failure (account, source, interface): the audit log's report.
        self._on_failure = on_failure
        self._clock = clock
        self._gate = asyncio.Semaphore(CONCURRENT_CHECKS)
        self._in_line = 0
        self._lines: dict[str, int] = {}
        self._accounts = _Failures(ACCOUNT_FAILURES)
        self._sources = _Failures(SOURCE_FAILURES)
        self.refused = 0
        self.failures = 0

    async def check(self, login: str, password: str, source: str | None = None,
                    interface: str = "rest") -> Principal | None:
        """The user if the password is theirs; None if not; TooManyAttempts if not checked."""
        if not login or len(login) > MAX_NAME or len(password) > MAX_PASSWORD:
            return None
        user = await self._read(lambda conn: find_user(conn, login))
        account = f"user:{user['id']}" if user is not None else f"name:{login.lower()}"
        origin = f"source:{source}" if source else None
        now = self._clock()
        wait = max(self._accounts.wait(account, now),
                   self._sources.wait(origin, now) if origin else 0.0)
        if wait > 0:
            self.refused += 1
            raise TooManyAttempts("too many failed sign-ins: wait before trying again", wait)
        if (self._in_line >= CONCURRENT_CHECKS + QUEUED
                or self._lines.get(account, 0) >= PER_ACCOUNT_IN_LINE
                or (origin and self._lines.get(origin, 0) >= PER_SOURCE_IN_LINE)):
            self.refused += 1
            raise TooManyAttempts("too many sign-ins at once: try again in a moment", 1.0,
                                  busy=True)
        keys = [account, *([origin] if origin else [])]
        self._in_line += 1
        for key in keys:
            self._lines[key] = self._lines.get(key, 0) + 1
        try:
            async with self._gate:
                who = await asyncio.to_thread(verify, user, password)
        finally:
            self._in_line -= 1
            for key in keys:
                left = self._lines[key] - 1
                if left:
                    self._lines[key] = left
                else:
                    del self._lines[key]
        now = self._clock()
        if who is None:
            self.failures += 1
            self._accounts.failed(account, now)
            if origin:
                self._sources.failed(origin, now)
            log.warning("failed sign-in for %r from %s", login[:64], source or "?",
                        extra={"login": login[:64], "source": source})
            if self._on_failure is not None:
                self._on_failure(user["id"] if user is not None else f"?{login.lower()}",
                                 source, interface)
        else:
            self._accounts.clear(account)
        return who
