"""External-server mode: write each printer's data into the lab's central OPC UA server.

The lab's server (the original MES layout) owns the model: `Printer0`... directly under
`Objects` in the namespace OPCUA_SERVER_NAMESPACE, with numeric node ids that change between
runs. This node is only a client: it resolves names by browse path, never creates nodes,
writes with each variable's own data type, and never makes a printer worker wait: workers
drop their latest status into a mailbox (one entry per printer, newer replaces older) and
one task writes it out, reconnecting with backoff while the server is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from cryptography.x509.oid import ExtendedKeyUsageOID

from mes.config import parse_opcua_security
from mes.config_groups import OpcuaSettings
from mes.printers.base import PrinterStatus

if TYPE_CHECKING:
    from mes.workers.context import WorkerContext

log = logging.getLogger(__name__)

# The lab model's variables, as browse paths below a printer object.
FIELDS = ("url", "update_time", "state", "nozzle/actual", "nozzle/target", "bed/actual",
          "bed/target", "job/file", "job/progress", "job/time_used", "job/time_left",
          "job/time_left_approx", "camera_url", "model")
# Our printer states in the lab's vocabulary (ready, printing, error).
LAB_STATE = {"idle": "ready", "finished": "ready", "printing": "printing",
             "paused": "printing", "error": "error", "offline": "error"}
REQUEST_TIMEOUT = 5.0  # seconds for one OPC UA request
CONNECT_TIMEOUT = 10.0  # seconds for connecting (and the security handshake)
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 5.0
RESOLVE_RETRY = 60.0  # seconds before an unknown opcua_name is looked up again
APPLICATION_URI = "urn:mes-printfarm:external-client"
_MISSING = object()
# Statuses after which a printer's node ids are looked up again (the server was replaced).
_STALE_IDS = {StatusCodes.BadNodeIdUnknown, StatusCodes.BadNodeIdInvalid}


def external_enabled(settings: OpcuaSettings) -> bool:
    """Whether this node writes into an external server (OPCUA_MODE=external)."""
    return settings.mode == "external"


def lab_values(printer: Mapping[str, Any], status: PrinterStatus,
               observed_at: float) -> dict[str, Any]:
    """A printer's values by lab field; unknown values (None) are left out, not written."""
    values: dict[str, Any] = {
        "url": printer.get("url"),
        "update_time": datetime.fromtimestamp(observed_at, UTC),
        "state": LAB_STATE.get(status.state, "error"),
        "nozzle/actual": status.nozzle_actual, "nozzle/target": status.nozzle_target,
        "bed/actual": status.bed_actual, "bed/target": status.bed_target,
        "job/file": status.file_name, "job/progress": status.progress,
        "job/time_used": status.time_printed, "job/time_left": status.time_left,
        "job/time_left_approx": _approx_left(status),
        "camera_url": printer.get("camera_url"), "model": printer.get("model"),
    }
    return {name: value for name, value in values.items() if value is not None}


def _approx_left(status: PrinterStatus) -> float | None:
    """Seconds left extrapolated from progress and time printed, else the printer's own."""
    if status.progress and status.time_printed is not None and 0 < status.progress <= 100:
        return status.time_printed * (100.0 - status.progress) / status.progress
    return status.time_left


def to_variant(value: Any, vtype: ua.VariantType) -> ua.Variant:
    """`value` as a Variant of the variable's own type (a Float stays Float); ValueError if
    it does not fit."""
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        converted: Any = float(value)
    elif vtype in (ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16,
                   ua.VariantType.UInt16, ua.VariantType.Int32, ua.VariantType.UInt32,
                   ua.VariantType.Int64, ua.VariantType.UInt64):
        converted = round(float(value))
    elif vtype == ua.VariantType.String:
        converted = str(value)
    elif vtype == ua.VariantType.LocalizedText:
        converted = ua.LocalizedText(str(value))
    elif vtype == ua.VariantType.Boolean:
        converted = bool(value)
    elif vtype == ua.VariantType.DateTime and isinstance(value, datetime):
        converted = value
    elif vtype == ua.VariantType.DateTime and isinstance(value, int | float):
        converted = datetime.fromtimestamp(value, UTC)
    else:
        raise ValueError(f"cannot write {value!r} as {vtype.name}")
    return ua.Variant(converted, vtype)


@dataclass
class Target:
    """One printer object in the external server: its variables, their types, what we wrote."""

    nodes: dict[str, Node]
    types: dict[str, ua.VariantType]
    written: dict[str, Any] = field(default_factory=dict)


async def client_certificate(data_dir: Path) -> tuple[Path, Path]:
    """This node's client certificate and key, generated into DATA_DIR/opcua on first use."""
    folder = data_dir / "opcua"
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    cert, key = folder / "external-client-cert.der", folder / "external-client-key.pem"
    await setup_self_signed_certificate(key, cert, APPLICATION_URI, socket.gethostname(),
                                        [ExtendedKeyUsageOID.CLIENT_AUTH],
                                        {"organizationName": "mes print farm"})
    return cert, key


class ExternalWriter:
    """Writes the printers this node drives into the external server, from its own task."""

    def __init__(self, settings: OpcuaSettings) -> None:
        self.settings = settings
        self._mailbox: dict[str, tuple[str, dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self._client: Client | None = None
        self._ns = 0
        self._targets: dict[str, Target | None] = {}
        self._unknown_since: dict[str, float] = {}
        self._warned: set[tuple[str, ...]] = set()
        self._task: asyncio.Task[None] | None = None
        # Per printer, the job fields of its latest job: the lab shows the latest job, so
        # they are written again after the server restarts, while the printer is idle.
        self._last_job: dict[str, dict[str, Any]] = {}
        self.connected = False
        self.writes = 0  # write requests sent (one per printer per round)
        self.values_written = 0
        self.superseded = 0  # values replaced in the mailbox before they were written
        self.connects = 0

    # -- the workers' side: never blocks, never raises --------------------------------

    def offer(self, printer: Mapping[str, Any] | None, status: PrinterStatus,
              observed_at: float) -> None:
        """Leave a printer's latest status for the writer; a newer one replaces it."""
        try:
            name = printer.get("opcua_name") if printer else None
            if not name or printer is None:
                return
            printer_id = str(printer["id"])
            values = lab_values(printer, status, observed_at)
            if "job/file" in values:
                self._last_job[printer_id] = {k: v for k, v in values.items()
                                              if k.startswith("job/")}
            else:
                values = {**self._last_job.get(printer_id, {}), **values}
            if printer_id in self._mailbox:
                self.superseded += 1
            self._mailbox[printer_id] = (str(name), values)
            self._wake.set()
        except Exception:  # a worker must never fail because of OPC UA
            log.exception("OPC UA external writer: cannot take printer status")

    def attach(self, ctx: WorkerContext) -> None:
        """Receive every status the workers of `ctx` observe."""
        def observe(printer_id: str, status: PrinterStatus, observed_at: float) -> None:
            try:
                printer = ctx.view().printers.get(printer_id)
            except Exception:  # the worker reads the same view next and reports it
                return
            self.offer(printer, status, observed_at)

        ctx.observer = observe

    # -- lifetime ----------------------------------------------------------------------

    def start(self) -> None:
        """Run the writer in its own task."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="opcua-external")

    async def stop(self) -> None:
        """Stop writing and disconnect."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def stats(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        return {"connected": self.connected, "connects": self.connects, "writes": self.writes,
                "values_written": self.values_written, "superseded": self.superseded,
                "pending": len(self._mailbox)}

    async def run(self) -> None:
        """Connect, write whatever arrives, and reconnect with backoff, until cancelled."""
        url = self.settings.server_url
        backoff = FIRST_BACKOFF
        down_since: float | None = None
        while True:
            try:
                await self._connect()
                if down_since is not None:
                    log.info("OPC UA server %s is back after %.1f s", url,
                             time.monotonic() - down_since)
                down_since, backoff = None, FIRST_BACKOFF
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("OPC UA server %s unreachable (%s); retrying with backoff", url,
                                _describe(exc))
            finally:
                await self._disconnect()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _connect(self) -> None:
        settings = self.settings
        client = Client(settings.server_url, timeout=REQUEST_TIMEOUT,
                        watchdog_intervall=max(REQUEST_TIMEOUT, 1.0))
        client.application_uri = APPLICATION_URI
        client.name = client.description = "mes print farm"
        if settings.username:
            client.set_user(settings.username)
            client.set_password(settings.password)
        self._client = client
        async with asyncio.timeout(CONNECT_TIMEOUT):
            security = parse_opcua_security(settings.security)
            if security is not None:
                cert, key = await client_certificate(settings.data_dir)
                policy = getattr(security_policies, f"SecurityPolicy{security[0]}")
                await client.set_security(policy, str(cert), str(key),
                                          mode=getattr(ua.MessageSecurityMode, security[1]))
            await client.connect()
            self._ns = await client.get_namespace_index(settings.server_namespace)
        self._targets.clear()
        self._unknown_since.clear()
        self.connected = True
        self.connects += 1
        log.info("OPC UA external server %s connected (namespace %s is index %d)",
                 settings.server_url, settings.server_namespace, self._ns)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        connected, self.connected = self.connected, False
        if client is not None and connected:  # a failed connect() cleans up after itself
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await client.disconnect()

    async def _serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._mailbox = self._mailbox, {}
            results = await asyncio.gather(
                *(self._write(name, values) for name, values in batch.values()),
                return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                for printer_id, entry in batch.items():  # a newer status wins, else retry
                    self._mailbox.setdefault(printer_id, entry)
                raise failures[0]

    async def _write(self, name: str, values: dict[str, Any]) -> None:
        """One batched write of the fields that changed since the last good write."""
        target = await self._target(name)
        client = self._client
        if target is None or client is None:
            return
        fields, variants = [], []
        for key, value in values.items():
            if key not in target.nodes or target.written.get(key, _MISSING) == value:
                continue
            try:
                variants.append(to_variant(value, target.types[key]))
            except (ValueError, TypeError) as exc:
                self._warn_once(("convert", name, key), "OPC UA %s/%s: %s", name, key, exc)
                continue
            fields.append(key)
        if not fields:
            return
        results = await client.write_values([target.nodes[f] for f in fields], variants,
                                            raise_on_partial_error=False)
        self.writes += 1
        for key, variant, result in zip(fields, variants, results, strict=True):
            if result.is_good():
                target.written[key] = values[key]
                self.values_written += 1
            elif result.value in _STALE_IDS:
                self._targets.pop(name, None)  # look the printer up again next time
            else:
                self._warn_once(("write", name, key, str(result.value)),
                                "OPC UA %s/%s refused %s: %s", name, key,
                                variant.VariantType.name, result.name)

    async def _target(self, name: str) -> Target | None:
        if name in self._targets:
            known = self._targets[name]
            since = self._unknown_since.get(name)
            if known is not None or since is None or time.monotonic() - since < RESOLVE_RETRY:
                return known
        client = self._client
        assert client is not None
        target = await self._resolve(client, name)
        self._targets[name] = target
        if target is None:
            self._unknown_since[name] = time.monotonic()
            self._warn_once(("unknown", name),
                            "OPC UA: no object %s under Objects in namespace %s of %s; its "
                            "printer is not written there", name,
                            self.settings.server_namespace, self.settings.server_url)
        else:
            self._unknown_since.pop(name, None)
        return target

    async def _resolve(self, client: Client, name: str) -> Target | None:
        """The printer's variables by browse path (one request) and their types (another)."""
        paths = [[ua.QualifiedName(part, self._ns) for part in [name, *key.split("/")]]
                 for key in FIELDS]
        found = await client.nodes.objects.get_children_by_path(paths,
                                                                raise_on_partial_error=False)
        nodes: dict[str, Node] = {}
        for key, targets in zip(FIELDS, found, strict=True):
            if targets and targets[0] is not None:
                nodes[key] = targets[0]
        if not nodes:
            return None
        missing = [key for key in FIELDS if key not in nodes]
        if missing:
            self._warn_once(("missing", name), "OPC UA %s lacks %s: not written", name,
                            ", ".join(missing))
        keys = list(nodes)
        read = await client.read_attributes([nodes[k] for k in keys], AttributeIds.DataType)
        types: dict[str, ua.VariantType] = {}
        for key, data_value in zip(keys, read, strict=True):
            dtype = data_value.Value.Value if data_value.Value is not None else None
            if not isinstance(dtype, ua.NodeId):
                nodes.pop(key)
                continue
            types[key] = await _variant_type(client, dtype)
        return Target(nodes, types)

    def _warn_once(self, key: tuple[str, ...], message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


async def _variant_type(client: Client, dtype: ua.NodeId) -> ua.VariantType:
    """The built-in type a variable of data type `dtype` is written as."""
    if dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int) \
            and 1 <= dtype.Identifier <= 25:
        return ua.VariantType(dtype.Identifier)
    return await data_type_to_variant_type(client.get_node(dtype))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
