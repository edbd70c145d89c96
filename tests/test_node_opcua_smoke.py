"""node-opcua against a bare asyncua 2.1 server: the interop harness itself works.

Basic256Sha256 SignAndEncrypt with a user name: browse by path, read, subscribe and see a
change, call a method, receive a custom event, be refused a write, crawl everything Good;
a wrong password is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Node, Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.node_opcua import require_node_opcua, run_node_opcua
from tests.ports import free_port

NS_URI = "http://mes-printfarm.org/UA/SmokeTest/"
USER, PASSWORD = "robot", "cell-password-1"


class _OneUser(UserManager):
    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username == USER and password == PASSWORD:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class Smoke:
    server: Server
    endpoint: str
    ns: int
    counter: Node
    event_type: Node


@pytest.fixture
async def smoke(tmp_path: Path) -> AsyncIterator[Smoke]:
    require_node_opcua()
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/smoke"
    server = Server(user_manager=_OneUser())
    await server.init()
    server.set_endpoint(endpoint)
    server.set_server_name("mes smoke test")
    app_uri = "urn:mes:tests:smoke"
    await server.set_application_uri(app_uri)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.der"
    await setup_self_signed_certificate(key, cert, app_uri, "127.0.0.1",
                                        [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "smoke"})
    await server.load_certificate(cert)
    await server.load_private_key(key)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    server.set_identity_tokens([ua.UserNameIdentityToken])

    ns = await server.register_namespace(NS_URI)
    event_type = await server.create_custom_event_type(
        ns, "PrintCompletedEventType", ua.ObjectIds.BaseEventType,
        [("JobId", ua.VariantType.String)])
    printer = await server.nodes.objects.add_object(ua.NodeId("printer-1", ns), f"{ns}:Printer1")
    await printer.add_variable(ua.NodeId("printer-1.nozzle", ns), f"{ns}:NozzleTemperature", 215.5,
                               ua.VariantType.Double)
    await printer.add_variable(ua.NodeId("printer-1.state", ns), f"{ns}:State", "printing",
                               ua.VariantType.String)
    counter = await printer.add_variable(ua.NodeId("printer-1.completed", ns),
                                         f"{ns}:CompletedPrints", 0, ua.VariantType.Int32)
    generator = await server.get_event_generator(event_type, server.nodes.server)

    async def complete(parent: ua.NodeId, job: ua.Variant) -> list[ua.Variant]:
        job_id = str(job.Value)
        done = int(await counter.read_value()) + 1
        await counter.write_value(ua.Variant(done, ua.VariantType.Int32))
        generator.event.SourceNode = printer.nodeid
        generator.event.SourceName = "Printer1"
        generator.event.JobId = job_id
        await generator.trigger(message=f"job {job_id} completed")
        return [ua.Variant(done, ua.VariantType.Int32)]

    await printer.add_method(ua.NodeId("printer-1.complete", ns), f"{ns}:CompletePrint", complete,
                             [ua.VariantType.String], [ua.VariantType.Int32])
    await server.start()
    try:
        yield Smoke(server, endpoint, ns, counter, event_type)
    finally:
        await server.stop()


def _plan(smoke: Smoke, steps: list[dict[str, Any]], password: str = PASSWORD) -> dict[str, Any]:
    return {"endpoint": smoke.endpoint, "securityMode": "SignAndEncrypt",
            "securityPolicy": "Basic256Sha256", "user": USER, "password": password,
            "steps": steps}


async def _run(plan: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
    # The server runs on this event loop: the client must not block it.
    return await asyncio.to_thread(run_node_opcua, plan, timeout)


def _ns(name: str) -> str:
    return f"{NS_URI}|{name}"


async def test_node_opcua_talks_to_asyncua(smoke: Smoke) -> None:
    printer = f"nsu={NS_URI};s=printer-1"
    result = await _run(_plan(smoke, [
        {"op": "browse", "path": [_ns("Printer1"), _ns("NozzleTemperature")], "save": "nozzle"},
        {"op": "browse", "path": [{"ns": NS_URI, "name": "Printer1"}, _ns("Missing")]},
        {"op": "read", "nodes": ["$nozzle", {"path": [_ns("Printer1"), _ns("State")]},
                                 "i=2267"]},
        {"op": "write", "node": "$nozzle", "dataType": "Double", "value": 20.0,
         "expect": ["BadUserAccessDenied", "BadNotWritable"]},
        {"op": "read", "nodes": ["$nozzle"]},
        {"op": "subscribe", "nodes": [f"nsu={NS_URI};s=printer-1.completed"],
         "until": [{"changes": 1}, {"eq": 1}], "timeout": 20,
         "after": [{"op": "call", "object": printer, "method": {"path": [_ns("CompletePrint")]},
                    "inputs": [{"dataType": "String", "value": "job-7"}], "expect": "Good"}]},
        {"op": "events", "eventType": f"nsu={NS_URI};i={smoke.event_type.nodeid.Identifier}",
         "fields": ["EventType", "SourceNode", "SourceName", "Message", _ns("JobId")],
         "count": 1, "timeout": 20,
         "after": [{"op": "call", "object": printer, "method": f"nsu={NS_URI};s=printer-1.complete",
                    "inputs": [{"dataType": "String", "value": "job-8"}]}]},
        {"op": "crawl"},
    ]))
    assert result["ok"], result
    browse, missing, read, write, reread, subscribe, events, crawl = result["steps"]
    assert browse["status"] == "Good"
    assert browse["nodeId"] == f"ns={smoke.ns};s=printer-1.nozzle"
    assert missing["status"] == "BadNoMatch" and missing["nodeId"] is None
    assert [(v["status"], v["value"], v["dataType"]) for v in read["values"]] == [
        ("Good", 215.5, "Double"), ("Good", "printing", "String"), ("Good", 255, "Byte")]
    assert write["ok"] is True, write
    assert reread["values"][0]["value"] == 215.5

    assert subscribe["met"] is True, repr(subscribe)
    assert subscribe["history"] == [[0, 1]]
    call = subscribe["after"][0]
    assert (call["status"], call["ok"], call["outputs"]) == ("Good", True, [1])

    assert events["met"] is True, events
    assert events["after"][0]["outputs"] == [2]
    event = events["events"][0]
    assert event["SourceNode"] == f"ns={smoke.ns};s=printer-1"
    assert (event["SourceName"], event["JobId"], event["Message"]) == (
        "Printer1", "job-8", "job job-8 completed")
    assert int(await smoke.counter.read_value()) == 2

    assert crawl["nodes"] > 1000 and not crawl["truncated"]
    assert crawl["bad"] == [] and crawl["browseErrors"] == [], crawl["bad"]
    assert set(crawl["values"]) == {"Good"} and crawl["values"]["Good"] == crawl["variables"]
    for kind in ("structure", "enumeration"):
        assert set(crawl["definitions"][kind]) == {"Good"}, crawl["definitions"]
    assert crawl["definitions"]["structure"]["Good"] > 50


async def test_wrong_password_is_refused(smoke: Smoke) -> None:
    result = await _run(_plan(smoke, [{"op": "read", "nodes": ["i=2267"]}],
                              password="not-the-password"))
    assert (result["ok"], result["connected"], result["session"]) == (False, True, False)
    assert result["stage"] == "session"
    assert result["status"] in ("BadUserAccessDenied", "BadIdentityTokenRejected"), result
