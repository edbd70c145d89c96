"""Every node holds every stored G-code file: fetch the ones this node lacks from its peers.

An upload is copied to a majority before it is committed; the other nodes (a node that was
down, or one added later) fetch it here in the background, so that any node can drive any
printer without a download at print time and every file survives the loss of a minority.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mes.state import queries
from mes.state.machine import StateMachine

log = logging.getLogger(__name__)

# Seconds between passes; a pass fetches at most this many files one after another.
EVERY = 30.0
PER_PASS = 50


async def missing_files(machine: StateMachine, has: Callable[[str], bool]) -> list[str]:
    """The stored files this node does not hold, oldest first."""
    rows = await asyncio.to_thread(machine.read, queries.list_files)
    return [r["id"] for r in rows if not has(r["id"])]


async def sync_once(machine: StateMachine, has: Callable[[str], bool],
                    fetch: Callable[[str], Awaitable[bool]]) -> tuple[int, int]:
    """Fetch up to PER_PASS missing files; (fetched, still missing)."""
    missing = await missing_files(machine, has)
    fetched = 0
    for sha in missing[:PER_PASS]:
        try:
            if await fetch(sha):
                fetched += 1
        except Exception as exc:  # a peer failing must not stop the loop
            log.info("could not fetch file %s: %s", sha[:12], exc)
    return fetched, len(missing) - fetched


async def run_sync(machine: StateMachine, has: Callable[[str], bool],
                   fetch: Callable[[str], Awaitable[bool]], every: float = EVERY) -> None:
    """Until cancelled: a pass now and then (at once again while files are still missing)."""
    while True:
        try:
            fetched, left = await sync_once(machine, has, fetch)
            if fetched:
                log.info("fetched %d stored files from peers (%d still missing)", fetched, left)
            await asyncio.sleep(1.0 if fetched and left else every)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("file sync pass failed")
            await asyncio.sleep(every)
