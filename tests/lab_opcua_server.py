"""A replica of the original lab's central OPC UA server (external-server mode tests).

`Printer0`...`Printer9` and `Arm1`...`Arm4` directly under Objects in the namespace
http://monashautomation.com/opcua-server, each printer with the lab's variables and types;
numeric node ids drawn at random on every start (clients must resolve by browse path).
Security None and anonymous by default; optionally Basic256Sha256 SignAndEncrypt with a user.
Every write request a client makes is recorded (and can be slowed down).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "http://monashautomation.com/opcua-server"
PRINTERS = [f"Printer{i}" for i in range(10)]
APPLICATION_URI = "urn:lab:opcua-server"
ARMS = [f"Arm{i}" for i in range(1, 5)]
Float, String, DateTime = ua.VariantType.Float, ua.VariantType.String, ua.VariantType.DateTime
# The lab's printer variables (as in the original mes-opcua-server model) and their types.
PRINTER_VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "url": (String, "http://localhost"), "update_time": (DateTime, None),
    "state": (String, "N/A"),
    "nozzle/actual": (Float, 0.0), "nozzle/target": (Float, 0.0),
    "bed/actual": (Float, 0.0), "bed/target": (Float, 0.0),
    "head/x": (Float, 0.0), "head/y": (Float, 0.0), "head/z": (Float, 0.0),
    "job/file": (String, "N/A"), "job/progress": (Float, 0.0), "job/time_used": (Float, 0.0),
    "job/time_left": (Float, 9999.0), "job/time_left_approx": (Float, 9999.0),
    "camera_url": (String, "http://localhost"), "model": (String, "Unknown"),
}
ARM_VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "update_time": (DateTime, None), "state": (String, "N/A")}


_ADMIN = User(role=UserRole.Admin)  # the attribute service's own default


@dataclass
class WriteRequest:
    """One Write service call a client made."""

    at: float  # time.monotonic()
    values: dict[tuple[str, str], Any]  # (object, field) -> value written
    types: dict[tuple[str, str], ua.VariantType]
    results: list[ua.StatusCode]


class _Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class LabServer:
    """The lab server on 127.0.0.1:`port`; start() and stop() may be repeated (new ids)."""

    def __init__(self, port: int, pki_dir: Path | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/lab/"
        self.pki_dir = pki_dir  # set: Basic256Sha256 SignAndEncrypt only, with `users`
        self.users = users
        self.server: Server | None = None
        self.ns = 0
        self.nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._names: dict[ua.NodeId, tuple[str, str]] = {}
        self.writes: list[WriteRequest] = []
        self.write_delay = 0.0  # seconds each client write is held back (a slow server)

    async def start(self) -> None:
        """Build the address space with fresh random numeric ids and serve."""
        users = _Users(self.users) if self.users is not None else None
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("Lab OPC UA server (replica)")
        await server.set_application_uri(APPLICATION_URI)
        if self.pki_dir is not None:
            cert, key = await self._certificate(self.pki_dir)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await server.register_namespace(NAMESPACE)
        await self._build(server)
        self._count_writes(server)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        """Stop serving (clients see the connection drop)."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def value(self, name: str, field: str) -> Any:
        """A variable's current value."""
        assert self.server is not None
        return await self.server.get_node(self.nodes[(name, field)]).read_value()

    async def data_value(self, name: str, field: str) -> ua.DataValue:
        """A variable's current DataValue (with its Variant type)."""
        assert self.server is not None
        return await self.server.get_node(self.nodes[(name, field)]).read_data_value()

    def writes_to(self, name: str) -> list[WriteRequest]:
        """The write requests that touched object `name`."""
        return [w for w in self.writes if any(obj == name for obj, _ in w.values)]

    async def _build(self, server: Server) -> None:
        objects = [(name, PRINTER_VARIABLES) for name in PRINTERS] + \
                  [(name, ARM_VARIABLES) for name in ARMS]
        random.shuffle(objects)
        count = sum(1 + len(v) + len({f.split("/")[0] for f in v if "/" in f})
                    for _, v in objects)
        ids = iter(random.sample(range(1000, 1_000_000), count))
        self.nodes, self._names = {}, {}
        for name, variables in objects:
            obj = await server.nodes.objects.add_object(ua.NodeId(next(ids), self.ns),
                                                      ua.QualifiedName(name, self.ns))
            folders: dict[str, Any] = {}
            for field, (vtype, default) in variables.items():
                parent = obj
                if "/" in field:
                    group = field.split("/")[0]
                    if group not in folders:
                        folders[group] = await obj.add_object(ua.NodeId(next(ids), self.ns),
                                                              ua.QualifiedName(group, self.ns))
                    parent = folders[group]
                leaf = field.split("/")[-1]
                value = datetime.now(UTC) if vtype == DateTime else default
                var = await parent.add_variable(ua.NodeId(next(ids), self.ns),
                                                ua.QualifiedName(leaf, self.ns),
                                                ua.Variant(value, vtype), datatype=None)
                await var.set_writable(True)
                self.nodes[(name, field)] = var.nodeid
                self._names[var.nodeid] = (name, field)

    def _count_writes(self, server: Server) -> None:
        service = server.iserver.attribute_service
        write = service.write

        async def counted(params: ua.WriteParameters, user: User = _ADMIN
                          ) -> list[ua.StatusCode]:
            if self.write_delay:
                await asyncio.sleep(self.write_delay)
            results = await write(params, user=user)
            if not any(item.NodeId in self._names for item in params.NodesToWrite):
                return results  # the server's own status updates
            values, types = {}, {}
            for item in params.NodesToWrite:
                key = self._names.get(item.NodeId, ("?", str(item.NodeId)))
                values[key] = item.Value.Value.Value if item.Value and item.Value.Value else None
                if item.Value and item.Value.Value:
                    types[key] = item.Value.Value.VariantType
            self.writes.append(WriteRequest(time.monotonic(), values, types, list(results)))
            return results

        service.write = counted  # type: ignore[method-assign]

    @staticmethod
    async def _certificate(folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "lab-server-cert.der", folder / "lab-server-key.pem"
        await setup_self_signed_certificate(key, cert, APPLICATION_URI,
                                            socket.gethostname(),
                                            [ExtendedKeyUsageOID.SERVER_AUTH], {})
        return cert, key
