"""The leader's delivery loop: send due deliveries, commit each attempt's result.

Runs on every node and works only while the node leads. A delivery is sent at least once:
its result is committed after the attempt, so a leader that dies in between leaves it
pending and the next leader sends it again with the same `webhook-id` (receivers drop the
repeat). Nothing is sent twice while one leader lives: in-flight ids are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from mes.notify.senders import Attempt, MailSender, WebhookSender
from mes.raft.writer import NoLeader
from mes.service_port import ServicePort
from mes.state.delivery_reads import due_deliveries
from mes.state.machine import Outcome
from mes.state.ops import Op

log = logging.getLogger(__name__)

BATCH = 200
CONCURRENCY = 32


class DeliveryLoop:
    """Sends pending deliveries while this node is the Raft leader."""

    def __init__(self, node: ServicePort) -> None:
        self.node = node
        settings = node.settings.notify
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self.webhooks = WebhookSender(settings.webhook_targets, settings.webhook_timeout)
        self.mail = (MailSender(settings.smtp_url, settings.mail_from, settings.webhook_timeout)
                     if settings.smtp_url else None)
        self.sent = 0
        node.on_apply(self._on_apply)

    def _on_apply(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        if any(e.entity == "delivery" and e.change == "created" for e in outcome.events):
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Until cancelled."""
        interval = self.node.settings.notify.interval
        try:
            while True:
                self._wake.clear()
                if self.node.is_leader():
                    try:
                        await self._tick()
                    except Exception:
                        log.exception("the delivery loop failed; it goes on")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wake.wait()
        finally:
            for task in list(self._in_flight.values()):
                task.cancel()
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
            await self.webhooks.aclose()

    async def _tick(self) -> None:
        # A delivery in flight when the read began may finish during it: the read may then
        # show it pending although its result is applied. Skip it this time.
        busy = set(self._in_flight)
        rows = await self.node.read(lambda c: due_deliveries(c, time.time(), BATCH + len(busy)))
        for row in rows:
            if row["id"] not in busy and row["id"] not in self._in_flight:
                self._in_flight[row["id"]] = asyncio.create_task(self._deliver(row),
                                                                 name=f"deliver-{row['id']}")

    async def _deliver(self, row: dict[str, Any]) -> None:
        try:
            async with self._limit:
                if not self.node.is_leader():
                    return
                attempt = await self._attempt(row)
                self.sent += attempt.result == "ok"
                await self._record(row["id"], attempt)
        except Exception:
            log.exception("delivery %s failed unexpectedly", row["id"])
        finally:
            self._in_flight.pop(row["id"], None)

    async def _attempt(self, row: dict[str, Any]) -> Attempt:
        if row["kind"] == "email":
            if self.mail is None:
                return Attempt("skip", time.time(), None, "SMTP_URL is not set on the leader")
            return await self.mail.send(row)
        if row["secret"] is None:
            return Attempt("skip", time.time(), None, "the webhook was removed")
        return await self.webhooks.send(row)

    async def _record(self, delivery_id: str, attempt: Attempt) -> None:
        settings = self.node.settings.notify
        args = {"results": [attempt.as_args(delivery_id)],
                "retry_base": settings.retry_base,
                "retry_cap": settings.retry_cap, "max_age": settings.max_age}
        try:
            outcome = await self.node.submit(Op.DELIVERY_RESULT, args)
            if outcome.error is not None:
                log.error("the result of delivery %s was refused: %s", delivery_id,
                          outcome.error)
        except NoLeader:
            log.warning("the result of delivery %s was not committed; it will be sent again",
                        delivery_id)
