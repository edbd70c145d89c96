"""A loopback HTTP server that records every request (headers and body) and answers as a
test tells it to: a stand-in for a printer at a URL nobody should send secrets to."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What the far side answers in the tests: text that must never reach our status or jobs.
SECRET_BODY = "SECRET-BODY-<script>alert(1)</script>"


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def mentions(self, text: str) -> bool:
        """Whether `text` is anywhere in the request: line, headers or body."""
        raw = f"{self.method} {self.path}\n" + "\n".join(
            f"{k}: {v}" for k, v in self.headers.items())
        return text in raw or text.encode() in self.body


# An answer: (status, content type, body), or None to answer bytes that are not HTTP.
Answer = tuple[int, str, bytes] | None
Responder = Callable[[str, str], Answer]


def always(status: int, body: str = SECRET_BODY, content_type: str = "text/html") -> Responder:
    """Answer every request with `status` and `body`."""
    return lambda method, path: (status, content_type, body.encode())


def json_answer(data: Any, status: int = 200) -> Answer:
    """A JSON answer."""
    return status, "application/json", json.dumps(data).encode()


@dataclass
class RecordingServer:
    """The running server: its URL and what it received."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    responder: Responder = field(default=always(403))

    def received(self, text: str) -> list[Recorded]:
        """The requests that carried `text` anywhere."""
        return [r for r in list(self.requests) if r.mentions(text)]


@contextmanager
def recording_server(responder: Responder | None = None) -> Iterator[RecordingServer]:
    """Serve on a free loopback port until the block ends."""
    state = RecordingServer(url="")
    if responder is not None:
        state.responder = responder

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            answer = state.responder(self.command, self.path)
            if answer is None:  # not HTTP at all
                self.wfile.write(SECRET_BODY.encode() + b"\r\n\r\n")
                self.close_connection = True
                return
            status, content_type, content = answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
