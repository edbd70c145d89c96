"""Sending one delivery: a signed webhook POST, or an e-mail through SMTP_URL."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp

from mes.networks import AddressRefused, Networks, Targets, guarded_connector
from mes.notify.signing import headers

USER_AGENT = "mes-webhooks/0.1"
MAX_ERROR = 300


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to, as delivery.result records it."""

    result: str  # ok | error | skip
    at: float
    status_code: int | None = None
    error: str | None = None

    def as_args(self, delivery_id: str) -> dict[str, Any]:
        """The entry of a delivery.result command."""
        args: dict[str, Any] = {"id": delivery_id, "result": self.result, "at": self.at}
        if self.status_code is not None:
            args["status_code"] = self.status_code
        if self.error is not None:
            args["error"] = self.error
        return args


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:MAX_ERROR]


class WebhookSender:
    """POSTs signed JSON; only to addresses inside WEBHOOK_NETWORKS when that is set."""

    def __init__(self, networks: Targets | Networks, timeout: float) -> None:
        self._networks = networks
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self._networks), timeout=self._timeout,
                trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT})
        return self._session

    async def send(self, delivery: dict[str, Any]) -> Attempt:
        """One attempt: 2xx is done; anything else (or no answer) is an error to retry."""
        body = delivery["payload"].encode()
        now = int(time.time())
        signed = headers(delivery["secret"], delivery["id"], now, body)  # JSON content type
        try:
            async with self._client().post(delivery["target"], data=body, headers=signed,
                                           allow_redirects=False) as response:
                code = response.status
        except AddressRefused as exc:
            return Attempt("error", time.time(), None, f"refused: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Attempt("error", time.time(), None, f"{type(exc).__name__}: {_short(exc)}")
        if 200 <= code < 300:
            return Attempt("ok", time.time(), code)
        return Attempt("error", time.time(), code, f"the receiver answered HTTP {code}")

    async def aclose(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def plaintext_allowed(query: str) -> bool:
    """Whether SMTP_URL says a password may travel unencrypted (`?plaintext=allow`)."""
    return "allow" in parse_qs(query).get("plaintext", [])


class MailSender:
    """Sends a job owner's message through SMTP_URL (smtplib, on a worker thread)."""

    def __init__(self, smtp_url: str, mail_from: str, timeout: float) -> None:
        self._url = urlsplit(smtp_url)
        self._from = mail_from
        self._timeout = timeout

    async def send(self, delivery: dict[str, Any]) -> Attempt:
        """One attempt: accepted by the SMTP server is done; a refusal or no answer retries."""
        try:
            await asyncio.to_thread(self._send, delivery)
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            return Attempt("error", time.time(), None, f"{type(exc).__name__}: {_short(exc)}")
        return Attempt("ok", time.time())

    def _send(self, delivery: dict[str, Any]) -> None:
        content = json.loads(delivery["payload"])
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = formataddr((content.get("to_name", ""), delivery["target"]))
        message["Subject"] = content["subject"]
        # Stable per delivery: a mail server or client may drop a repeated attempt.
        domain = self._from.rpartition("@")[2] or "mes.local"
        message["Message-ID"] = f"<{delivery['id']}@{domain}>"
        message.set_content(content["text"])
        url = self._url
        host, port = url.hostname or "localhost", url.port
        if url.scheme == "smtps":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, timeout=self._timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port or 25, timeout=self._timeout)
        with smtp:
            encrypted = url.scheme == "smtps"
            if url.scheme == "smtp":
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                    encrypted = True
            if url.username and not encrypted and not plaintext_allowed(url.query):
                raise ValueError(
                    "the SMTP server offers no STARTTLS: the password is not sent in clear "
                    "(add ?plaintext=allow to SMTP_URL to allow it)")
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)
