"""Printers and webhooks may not point at the server's own host, its link-local neighbours
or its cloud's metadata service unless ALLOW_LOCAL_ADDRESSES says so: refused at the REST
edge with a clear 422, and again on every connection (a command that bypassed the edge, a
name that resolves to loopback later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mes import networks
from mes.networks import Targets, local_kind, refusal
from mes.notify.senders import WebhookSender
from mes.printers.base import PrinterNotSent
from mes.printers.prusalink import PrusaLinkClient
from mes.state.ops import Op
from tests.farm_helpers import api_with, eventually, farm_settings, running_farm
from tests.recording_server import always, json_answer, recording_server

STRICT = Targets((), allow_local=False)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("[::1]", "loopback"), ("::ffff:127.0.0.1", "loopback"), ("2002:7f00:1::", "loopback"),
    ("0.0.0.0", "unspecified (this host)"), ("::", "unspecified (this host)"),
    ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"), ("224.0.0.1", "multicast"),
])
def test_local_addresses_are_named(address: str, kind: str) -> None:
    assert local_kind(address) == kind
    problem = refusal(address, STRICT)
    assert problem is not None and "ALLOW_LOCAL_ADDRESSES=true" in str(problem)
    assert refusal(address, Targets((), allow_local=True)) is None


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.1.50", "172.16.0.9", "8.8.8.8",
                                     "fd12:3456::7", "100.64.0.1"])
def test_lab_and_public_addresses_are_not_local(address: str) -> None:
    assert local_kind(address) is None
    assert refusal(address, STRICT) is None


def test_networks_still_narrow_when_local_addresses_are_allowed() -> None:
    inside_lab = Targets(networks.parse_networks("10.0.0.0/8"), allow_local=True)
    assert refusal("10.0.0.5", inside_lab) is None
    assert "outside PRINTER_NETWORKS" in str(refusal("127.0.0.1", inside_lab))
    with_loopback = Targets(networks.parse_networks("127.0.0.0/8"), allow_local=False)
    assert "loopback" in str(refusal("127.0.0.1", with_loopback))


def test_the_default_refuses_local_addresses(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLOW_LOCAL_ADDRESSES", raising=False)
    settings = farm_settings(tmp_path)
    assert settings.allow_local_addresses is False
    assert settings.printer_targets == STRICT and settings.webhook_targets == STRICT


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:5999", "http://localhost:5999", "http://[::1]:80/",
    "http://[::ffff:127.0.0.1]:5999", "http://0.0.0.0:5999", "http://169.254.169.254/",
])
async def test_a_printer_at_a_local_address_is_refused(tmp_path: Path, url: str) -> None:
    async with api_with(tmp_path, allow_local_addresses=False) as api:
        refused = await api.post("/api/v1/printers", json={
            "id": "p", "api": "OctoPrint", "url": url, "api_key": "K"})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "printer_address_refused" and error["field"] == "url"
        assert "ALLOW_LOCAL_ADDRESSES=true" in error["message"]
        assert (await api.get("/api/v1/printers")).json() == []
        lab = await api.post("/api/v1/printers", json={
            "id": "lab", "api": "OctoPrint", "url": "http://10.1.2.3", "api_key": "K",
            "worker": False})
        assert lab.status_code == 201
        moved = await api.patch("/api/v1/printers/lab", json={"url": url})
        assert moved.json()["error"]["code"] == "printer_address_refused"
        assert (await api.get("/api/v1/printers/lab")).json()["url"] == "http://10.1.2.3"
        mock = await api.post("/api/v1/printers", json={"id": "m", "api": "Mock", "url": url})
        assert mock.status_code == 201  # never connected to


async def test_a_webhook_to_a_local_address_is_refused(tmp_path: Path) -> None:
    async with api_with(tmp_path, allow_local_addresses=False) as api:
        for url in ("http://127.0.0.1:9/x", "https://[::1]/x", "http://169.254.169.254/latest"):
            refused = await api.post("/api/v1/webhooks", json={"url": url, "types": ["*"]})
            assert refused.status_code == 422, refused.text
            assert "ALLOW_LOCAL_ADDRESSES=true" in refused.json()["error"]["message"]
        assert (await api.get("/api/v1/webhooks")).json() == []
        unresolvable = await api.post("/api/v1/webhooks", json={
            "url": "https://hooks.invalid/x", "types": ["*"]})
        assert unresolvable.status_code == 201  # checked again on every connection


async def test_every_connection_checks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name accepted at the edge that resolves to loopback later reaches nothing."""
    answers = {"printer.lan": ["127.0.0.1"]}

    async def fake_resolve(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(networks, "resolve", fake_resolve)
    with recording_server(lambda m, p: json_answer({"printer": {"state": "IDLE"}})) as server:
        port = server.url.rsplit(":", 1)[1]
        client = PrusaLinkClient(f"http://printer.lan:{port}", api_key="K", networks=STRICT)
        with pytest.raises(PrinterNotSent, match=r"address 127\.0\.0\.1 is loopback"):
            await client.status(expect_job=False)
        await client.aclose()
        literal = PrusaLinkClient(server.url, api_key="K", networks=STRICT)
        with pytest.raises(PrinterNotSent, match="ALLOW_LOCAL_ADDRESSES"):
            await literal.status(expect_job=False)
        await literal.aclose()
        sender = WebhookSender(STRICT, timeout=5.0)
        attempt = await sender.send({"id": "d1", "target": f"{server.url}/hook",
                                     "secret": "s" * 32, "payload": "{}"})
        await sender.aclose()
        assert attempt.result == "error" and "ALLOW_LOCAL_ADDRESSES" in (attempt.error or "")
        assert server.requests == []


async def test_a_worker_never_reaches_a_local_printer(tmp_path: Path) -> None:
    """A command that bypassed the REST edge still reaches no local printer."""
    with recording_server(always(200, "{}", "application/json")) as server:
        async with running_farm(tmp_path, printer_worker_interval=0.1,
                                allow_local_addresses=False) as (node, api):
            outcome = await node.writer.submit(Op.PRINTER_CREATE, {
                "id": "lo", "api": "OctoPrint", "url": server.url, "api_key": "K"})
            assert outcome.ok, outcome.error

            async def refused() -> dict[str, Any] | None:
                status: dict[str, Any] = (await api.get("/api/v1/printers/lo/status")).json()
                return status if status.get("error") else None

            status = await eventually(refused, 15, "the worker's refusal in the status")
            assert status["state"] == "offline"
            assert "address 127.0.0.1 is loopback" in status["error"]
        assert server.requests == []
