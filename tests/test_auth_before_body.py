"""Nothing is read before it is allowed: an upload without a valid token is answered 401
from its headers, while the client has sent a sliver of a 150 MB body."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.auth import ADMIN_TOKEN
from tests.cluster import Cluster, ServerProcess
from tests.farm_helpers import GCODE

BOUNDARY = "mesboundary"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cluster = Cluster(1, tmp_path_factory.mktemp("auth-first"), MAX_UPLOAD_MB="200").start()
    try:
        yield cluster.nodes[0]
    finally:
        cluster.stop()


def start_upload(node: ServerProcess, token: str | None, size: int = 150 * 2**20,
                 wait: float = 5.0) -> bytes:
    """Send the headers of a `size`-byte upload and 64 KiB of it; the answer, if any comes
    within `wait` seconds (an answer that must come returns as soon as it does)."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.gcode\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    lines = ["POST /api/v1/files HTTP/1.1", f"Host: 127.0.0.1:{node.http_port}",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
             f"Content-Length: {size}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n" + head).encode() + b"G1 X1\n" * 10_000
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=30) as sock:
        sock.sendall(request)
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.5)
        while time.monotonic() - started < wait and b"\r\n\r\n" not in answer:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                continue
            if not piece:
                break
            answer += piece
    return answer


@pytest.mark.parametrize("token", [None, "mes_not-a-real-token"])
def test_an_upload_without_a_valid_token_is_refused_before_its_body(
        server: ServerProcess, token: str | None) -> None:
    # The refusal must come without the body, which never does: a bound on "never", not on
    # how fast a loaded machine answers.
    answer = start_upload(server, token, wait=60.0)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"www-authenticate: bearer" in answer.lower()
    assert not list((server.data_dir / "upload").rglob(".incoming-*"))


def test_an_upload_with_a_token_is_read_and_stored(server: ServerProcess) -> None:
    answer = start_upload(server, ADMIN_TOKEN)
    assert answer == b"", answer[:200]  # still reading the body: no answer yet
    stored = server.client.post("/files", files={"file": ("part.gcode", GCODE)})
    assert stored.status_code == 201, stored.text


def test_signing_in_still_takes_a_body_without_a_token(server: ServerProcess) -> None:
    import httpx

    response = httpx.post(f"http://127.0.0.1:{server.http_port}/api/v1/session",
                          json={"name": "admin", "password": "wrong password"}, timeout=30)
    # read and checked: the answer is about the password, not about a missing token
    assert response.status_code == 401, response.text
    assert "wrong user name or password" in response.text
    signed_in = httpx.post(f"http://127.0.0.1:{server.http_port}/api/v1/session",
                           json={"token": ADMIN_TOKEN}, timeout=30)
    assert signed_in.status_code == 200, signed_in.text
