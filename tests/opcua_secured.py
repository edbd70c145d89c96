"""A bare, secured asyncua server around a farm node, and clients of it, for tests of
mes.opcua.security and mes.opcua.methods (the embedded server builds the real one)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from asyncua import Client, Node, Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import (
    SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from mes.node import FarmNode
from mes.opcua.identity import password_check
from mes.opcua.methods import FarmMethods
from mes.opcua.security import WritePolicy, secure
from tests.ports import free_port

NS_URI = "http://mes-printfarm.org/UA/PrintFarm/"
POLICIES = {"Basic256Sha256": SecurityPolicyBasic256Sha256,
            "Aes128_Sha256_RsaOaep": SecurityPolicyAes128Sha256RsaOaep,
            "Aes256_Sha256_RsaPss": SecurityPolicyAes256Sha256RsaPss}
PASSWORD = "correct horse battery"


@dataclass
class Secured:
    """The running server: its endpoint, namespace index and a client certificate."""

    server: Server
    endpoint: str
    ns: int
    cert: Path
    key: Path
    client_uri: str = "urn:mes-tests:opcua-client"


async def make_user(api: httpx.AsyncClient, user_id: str, role: str = "user",
                    password: str = PASSWORD) -> None:
    """A user with a password, made through the REST API as the admin client `api`."""
    response = await api.post("/api/v1/users", json={"id": user_id, "name": user_id,
                                                     "role": role, "password": password})
    assert response.status_code == 201, response.text


async def client_certificate(folder: Path, uri: str) -> tuple[Path, Path]:
    """A self-signed client certificate and key for `uri` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "client_cert.der", folder / "client_key.pem"
    await setup_self_signed_certificate(key, cert, uri, "localhost",
                                        [ExtendedKeyUsageOID.CLIENT_AUTH],
                                        {"commonName": "mes tests"})
    return cert, key


@contextlib.asynccontextmanager
async def secured_server(node: FarmNode, folder: Path, printers: tuple[str, ...] = (),
                         writable: WritePolicy | None = None,
                         **settings: Any) -> AsyncIterator[Secured]:
    """A server on a free loopback port with Objects/PrintFarm (SubmitJob), a printer
    object per id under PrintFarm/Printers (methods, a writable `Label` and a read-only
    `State`) and PrintFarm/JobOrderControl, secured with `secure`."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/mes/"
    config = node.settings.model_copy(update={"opcua_endpoint": endpoint, **settings})
    server = Server()
    await server.init()
    server.set_endpoint(endpoint)
    await secure(server, config.opcua, password_check(node), writable)
    ns = await server.register_namespace(NS_URI)
    methods = FarmMethods.for_node(node)
    farm = await server.nodes.objects.add_folder(ua.NodeId("PrintFarm", ns), f"{ns}:PrintFarm")
    await methods.add_farm_methods(farm, ns)
    folder_node = await farm.add_folder(ua.NodeId("PrintFarm/Printers", ns), f"{ns}:Printers")
    for printer_id in printers:
        printer = await folder_node.add_object(ua.NodeId(f"Printers/{printer_id}", ns),
                                               f"{ns}:{printer_id}")
        label = await printer.add_variable(ua.NodeId(f"Printers/{printer_id}/Label", ns),
                                           f"{ns}:Label", "")
        await label.set_writable()
        await printer.add_variable(ua.NodeId(f"Printers/{printer_id}/State", ns),
                                   f"{ns}:State", "ready")
        await methods.add_printer_methods(printer, printer_id, ns)
    control = await farm.add_object(ua.NodeId("PrintFarm/JobOrderControl", ns),
                                    f"{ns}:JobOrderControl")
    await methods.add_job_order_control(control, ns)
    client_uri = "urn:mes-tests:opcua-client"
    cert, key = await client_certificate(folder / "client", client_uri)
    await server.start()
    try:
        yield Secured(server, endpoint, ns, cert, key, client_uri)
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def connect(secured: Secured, user: str | None = None, password: str = PASSWORD,
                  policy: str | None = "Basic256Sha256",
                  mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
                  ) -> AsyncIterator[Client]:
    """A connected asyncua client (policy None: no security)."""
    client = Client(secured.endpoint, timeout=10)
    client.application_uri = secured.client_uri
    if policy is not None:
        await client.set_security(POLICIES[policy], str(secured.cert), str(secured.key),
                                  mode=mode)
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    async with client:
        yield client


async def printer_node(client: Client, ns: int, printer_id: str) -> Node:
    """A printer object by its browse path Objects/PrintFarm/Printers/<id>."""
    node: Node = await client.nodes.objects.get_child(
        [f"{ns}:PrintFarm", f"{ns}:Printers", f"{ns}:{printer_id}"])
    return node


async def call(parent: Node, ns: int, name: str, *args: ua.Variant) -> ua.CallMethodResult:
    """Call a method by browse name; the full result (status code included, no raise)."""
    method = await parent.get_child(f"{ns}:{name}")
    request = ua.CallMethodRequest(ObjectId=parent.nodeid, MethodId=method.nodeid,
                                   InputArguments=list(args))
    results: list[ua.CallMethodResult] = await parent.session.call([request])
    return results[0]
