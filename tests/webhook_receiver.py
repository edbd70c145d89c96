"""A webhook receiver on loopback for tests: records each POST, answers as told, and checks
the Standard Webhooks signature two ways (our own HMAC and the `standardwebhooks` package)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook

from tests.recording_server import Recorded, recording_server


def signature_valid(secret: str, request: Recorded) -> bool:
    """Whether the request carries a valid v1 signature of its id, timestamp and body."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    ours = any(part == f"v1,{expected}" for part in headers["webhook-signature"].split(" "))
    Webhook(secret).verify(request.body, headers)  # raises when it disagrees
    return ours


@dataclass
class Receiver:
    """The receiver's URL, what it got, and how it answers next."""

    url: str
    requests: list[Recorded]
    statuses: list[int] = field(default_factory=list)  # answers to come, then 200
    hold: threading.Event = field(default_factory=threading.Event)  # set: answer at once
    held: int = 0  # how many requests wait for `hold` now

    def posts(self) -> list[Recorded]:
        return [r for r in list(self.requests) if r.method == "POST"]

    def ids(self) -> list[str]:
        return [{k.lower(): v for k, v in r.headers.items()}["webhook-id"] for r in self.posts()]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.posts()]


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """Serve on a free loopback port until the block ends."""
    lock = threading.Lock()
    holder: list[Receiver] = []

    def respond(method: str, path: str) -> tuple[int, str, bytes]:
        receiver = holder[0]
        if not receiver.hold.is_set():
            with lock:
                receiver.held += 1
            receiver.hold.wait(60)
            with lock:
                receiver.held -= 1
        with lock:
            status = receiver.statuses.pop(0) if receiver.statuses else 200
        return status, "text/plain", b"ok"

    responder: Callable[[str, str], tuple[int, str, bytes]] = respond
    with recording_server(responder) as server:
        receiver = Receiver(server.url, server.requests)
        receiver.hold.set()
        holder.append(receiver)
        try:
            yield receiver
        finally:
            receiver.hold.set()
