"""One Server-Sent Events stream: the text a subscriber's events become on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

from mes.events.hub import AUTH_ENTITIES, EventHub, Key, StreamEvent, Subscriber, format_id


def sse(event: str, data: str, event_id: str | None = None) -> str:
    """One SSE message (`data` is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def reload_message(reason: str) -> str:
    """The message that tells a client to reload its state and reconnect without an id."""
    return sse("reload", json.dumps({"reason": reason}))


def _message(event: StreamEvent) -> str:
    if event.key is None:
        return sse("telemetry", event.data)
    return sse("change", event.data, format_id(event.key))


async def stream(hub: EventHub, subscriber: Subscriber, after: Key | None, retry_ms: int,
                 keepalive: float, resume_wait: float,
                 still_allowed: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
    """The stream of one client until it leaves, falls behind, or the server stops.

    `after` is the key of the client's Last-Event-ID: the stream first waits (up to
    `resume_wait`) for this node to apply that index, then replays the window after it.
    `still_allowed` is checked at each keep-alive and before anything applied after a change
    of an account or token (a revoked token, a disabled or demoted reader ends the stream).
    """
    yield f"retry: {retry_ms}\n\n"
    if hub.closed:  # shutting down (or never started): the client resumes elsewhere
        return
    if after is not None and not await hub.wait_index(after[0], resume_wait):
        yield reload_message("this node has not reached that event id")
        return
    backlog, reason = hub.subscribe(subscriber, after)
    try:
        if reason is not None:
            yield reload_message(reason)
            return
        if after is None:
            # The position this stream starts at, so a reconnect resumes from here.
            yield sse("hello", json.dumps({"index": hub.last_index}),
                      format_id((hub.last_index, 2**31)))
        for event in backlog:
            yield _message(event)
        while True:
            if not subscriber.wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(keepalive):
                        await subscriber.wake.wait()
            events = subscriber.take()
            pending: list[str] = []
            for event in events:
                if event.entity in AUTH_ENTITIES:
                    # Before anything applied after an account or token change: is the
                    # reader still who it was, with the same rights?
                    if pending:
                        yield "".join(pending)
                        pending = []
                    if not await still_allowed():
                        yield reload_message("this token is no longer valid or its rights "
                                             "changed: sign in and reconnect")
                        return
                    if not subscriber.visible(event):
                        continue
                pending.append(_message(event))
            if pending:
                yield "".join(pending)
            if subscriber.reload is not None:
                yield reload_message(subscriber.reload)
                return
            if subscriber.closing or hub.closed:
                return
            if not events:
                if not await still_allowed():
                    yield reload_message("this token is no longer valid")
                    return
                yield ": keep-alive\n\n"
    finally:
        hub.unsubscribe(subscriber)


# A gzip stream's window and memory: about 48 KiB per open stream (zlib's default is about
# 256 KiB), enough for a dozen telemetry events of context.
GZIP_WBITS = 16 + 12
GZIP_MEMLEVEL = 6


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header allows gzip (and does not refuse it with q=0)."""
    for item in (accept_encoding or "").lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "x-gzip"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


async def gzipped(chunks: AsyncIterator[str]) -> AsyncIterator[bytes]:
    """The stream compressed as one gzip member, flushed after every chunk so that each
    event reaches the client at once (the keys every event repeats cost almost nothing)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, GZIP_WBITS, GZIP_MEMLEVEL)
    async for chunk in chunks:
        yield packer.compress(chunk.encode()) + packer.flush(zlib.Z_SYNC_FLUSH)
    yield packer.flush()
