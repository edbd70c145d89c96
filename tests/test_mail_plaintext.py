"""SMTP_URL with a password never sends it in clear: a server without STARTTLS gets no AUTH
unless the URL says `?plaintext=allow`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mes.notify.senders import MailSender
from tests.ports import free_port


class Recorder:
    def __init__(self) -> None:
        self.logins: list[tuple[bytes, bytes]] = []
        self.messages = 0

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 OK"


@pytest.fixture
def plain_smtp() -> Iterator[tuple[int, Recorder]]:
    """An SMTP server on loopback that offers AUTH without TLS (and no STARTTLS)."""
    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port,
                            authenticator=recorder, auth_require_tls=False)
    controller.start()
    try:
        yield port, recorder
    finally:
        controller.stop()


DELIVERY = {"id": "msg_1_0", "target": "ada@uni.test",
            "payload": json.dumps({"subject": "Done", "text": "ready", "to_name": "Ada"})}


async def test_a_password_is_not_sent_to_a_server_without_starttls(
        plain_smtp: tuple[int, Recorder]) -> None:
    port, recorder = plain_smtp
    sender = MailSender(f"smtp://farm:s3cret@127.0.0.1:{port}", "farm@lab.test", 10)
    attempt = await sender.send(DELIVERY)
    assert attempt.result == "error" and "STARTTLS" in (attempt.error or "")
    assert recorder.logins == [] and recorder.messages == 0


async def test_plaintext_allowed_by_the_url_sends_it(plain_smtp: tuple[int, Recorder]) -> None:
    port, recorder = plain_smtp
    sender = MailSender(f"smtp://farm:s3cret@127.0.0.1:{port}?plaintext=allow",
                        "farm@lab.test", 10)
    attempt = await sender.send(DELIVERY)
    assert attempt.result == "ok", attempt
    assert recorder.logins == [(b"farm", b"s3cret")] and recorder.messages == 1
