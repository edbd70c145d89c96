"""The embedded OPC UA server of a node (OPCUA_SERVER_URL contains `mock`).

It runs on its own thread with its own event loop, so loading the model (about 5 s of CPU)
and building a big farm never stall the REST API's loop. It listens at OPCUA_ENDPOINT at once,
then loads the model and builds the farm in the background (ServiceLevel 0 meanwhile) and
follows the state machine from then on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asyncua import Node, Server, ua
from asyncua.common.instantiate_util import instantiate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from mes.opcua.address_space import AddressSpace, Namespaces
from mes.opcua.discovery import PeerDiscovery
from mes.opcua.events import FarmEvents
from mes.opcua.history import FarmHistory
from mes.opcua.identity import password_check
from mes.opcua.job_management import (
    FARM_JOB_MANAGEMENT,
    FARM_JOB_ORDER_CONTROL,
    FARM_JOB_ORDER_RESULTS,
)
from mes.opcua.job_order_control import JobOrderControlValues
from mes.opcua.limits import announce as announce_limits
from mes.opcua.methods import FarmMethods
from mes.opcua.mirror import Mirror
from mes.opcua.privacy import Privacy
from mes.opcua.redundancy import ServiceLevel, application_uri, setup_redundancy
from mes.opcua.security import secure
from mes.opcua.session_limits import AccountSessions
from mes.opcua.speedups import install_speedups
from mes.opcua_model.loader import load_model
from mes.opcua_model.nodesets import MACHINERY_JOBS_URI
from mes.version import DATA_LEVEL, RELEASE, RELEASE_DATE

if TYPE_CHECKING:
    from mes.app.ports import Farm

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
# Longest the garbage collector stays off while the model and the farm are built (seconds).
GC_PAUSE_LIMIT = 120.0
# Longest a method's answer waits for the address space to show what the call committed
# (seconds; the mirror's passes take milliseconds, a node still building takes longer).
SHOWN_TIMEOUT = 5.0


class ReadOnlyUsers(UserManager):  # type: ignore[misc]
    """Without helper B's security: anonymous sessions with the role User (never Admin)."""

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        return User(role=UserRole.User) if username is None else None


class EmbeddedServer:
    """The node's OPC UA server: model, farm mirror, events and redundancy."""

    def __init__(self, node: Farm) -> None:
        self.node = node
        self.settings = node.settings.opcua
        self.server: Server = Server(user_manager=ReadOnlyUsers())
        self.farm_ns: int = -1
        self.application_uri = application_uri(self.settings.raft_self)
        self.space: AddressSpace | None = None
        self.mirror: Mirror | None = None
        self.events: FarmEvents | None = None
        self.job_order_control: Node | None = None
        self.job_control: JobOrderControlValues | None = None
        self.service_level = ServiceLevel(self.server, self.node.raft_status)
        self.started_seconds: float | None = None  # until the endpoint listened
        self.failure: str | None = None  # why the endpoint could not listen
        self.model_seconds: float | None = None  # loading the NodeSets
        self.build_seconds: float | None = None  # the farm's first build
        self.ready = threading.Event()  # set once the farm is built
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False

    # -- the caller's side (any event loop)

    async def start(self) -> None:
        """Listen at OPCUA_ENDPOINT (returns once bound); the farm builds in the background."""
        bound: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(bound,), name="opcua",
                                        daemon=True)
        self._thread.start()
        await asyncio.wrap_future(bound)

    async def stop(self) -> None:
        """Stop serving and end the thread."""
        self._stop_requested = True
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            await asyncio.to_thread(thread.join, STOP_TIMEOUT)
        self._thread = None

    def problem(self) -> str | None:
        """Why this server does not serve (yet), as a readiness reason; None once it listens."""
        if self.failure is not None:
            return f"the OPC UA server could not listen at {self.settings.endpoint}: " \
                   f"{self.failure}"
        if self.started_seconds is None:
            return "the OPC UA server is starting"
        return None

    def status(self) -> dict[str, Any]:
        """Timings and size, for logs and diagnostics."""
        return {"endpoint": self.settings.endpoint, "ready": self.ready.is_set(),
                "started_seconds": self.started_seconds, "model_seconds": self.model_seconds,
                "build_seconds": self.build_seconds,
                "nodes": self.space.node_count if self.space else 0,
                "service_level": self.service_level.level}

    # -- the server's thread

    def _main(self, bound: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(bound))
        except Exception:
            log.exception("the OPC UA server failed")
        finally:
            loop.close()

    async def _serve(self, bound: concurrent.futures.Future[None]) -> None:
        self._stopping = asyncio.Event()
        started = time.perf_counter()
        try:
            await self._listen()
        except BaseException as exc:
            self.failure = str(exc) or type(exc).__name__
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                bound.set_exception(exc)  # (unless the node stopped meanwhile)
            return
        self.started_seconds = time.perf_counter() - started
        log.info("OPC UA at %s (listening after %.2f s)", self.settings.endpoint,
                 self.started_seconds)
        try:
            bound.set_result(None)
        except concurrent.futures.InvalidStateError:  # the node stopped while this started
            self._stop_requested = True
        if self._stop_requested:  # stop() came before the loop could be told
            self._stopping.set()
        privacy = Privacy.of(self.server)
        accounts = AccountSessions(self.node, self.node.read,
                                   lambda: list(privacy.sessions.values()))
        accounts.attach()
        discovery = PeerDiscovery(self.server, self.node.read, self.settings.raft_self)
        tasks = [asyncio.create_task(self.service_level.run(), name="opcua-service-level"),
                 asyncio.create_task(discovery.run(), name="opcua-discovery"),
                 asyncio.create_task(self._logged(self._build_and_mirror),
                                     name="opcua-mirror")]
        try:
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            accounts.detach()
            if self.mirror is not None:
                self.mirror.detach()
            with contextlib.suppress(Exception):
                await self.server.stop()

    @staticmethod
    async def _logged(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the OPC UA farm could not be built; the server shows no farm")

    async def _listen(self) -> None:
        server = self.server
        Privacy.of(server).farm_built = False  # no remote session until the farm exists
        install_speedups()  # asyncua's two hot spots, before any subscription exists
        await server.init()
        await server.set_application_uri(self.application_uri)
        await _secure(self)
        server.set_endpoint(self.settings.endpoint)
        server.set_server_name(f"mes node {self.settings.raft_self}")
        server.product_uri = "urn:mes:print-farm"
        server.manufacturer_name = "mes"
        # BuildInfo names this release (asyncua's init wrote "1.0pre").
        await server.set_build_info(server.product_uri, server.manufacturer_name, "mes",
                                    RELEASE, f"level {DATA_LEVEL}",
                                    datetime.fromisoformat(RELEASE_DATE).replace(tzinfo=UTC))
        await announce_limits(server)
        await self.service_level.update()  # 0 until the farm is built
        await server.start()

    async def _build_and_mirror(self) -> None:
        started = time.perf_counter()
        # The model's ~3,000 nodes and the farm's tens of thousands live as long as the server.
        # The collector's full passes over them while they are made stall every thread (the
        # REST API's loop too) for up to a second: no collection until they are built, then
        # they are kept out of later passes.
        gc.disable()
        self.farm_ns = await load_model(self.server)
        self.model_seconds = time.perf_counter() - started
        await setup_redundancy(self.server, self._server_uris())
        ns = await Namespaces.resolve(self.server)
        self.space = AddressSpace(self.server, ns)
        self.events = FarmEvents(self.server, ns.farm)
        await self.events.init()
        Privacy.of(self.server).history = FarmHistory(self.node.read, ns.farm)
        await self.server.nodes.server.write_attribute(  # its past events: HistoryRead
            ua.AttributeIds.EventNotifier, ua.DataValue(ua.Variant(5, ua.VariantType.Byte)))
        self.job_order_control = await self._job_management()
        self.events.job_order_control = self.job_order_control.nodeid
        await _attach_methods(self)
        self.mirror = Mirror(self.node, self.node.read, self.space, self.events)
        self.mirror.attach()
        control = self.job_control = JobOrderControlValues(
            self.server, self.job_order_control.nodeid, self.node.read,
            Privacy.of(self.server))
        self.events.on_moved = control.moved
        self.mirror.on_noted = control.noted
        run = asyncio.create_task(self.mirror.run(), name="opcua-mirror-passes")
        values = asyncio.create_task(control.run(), name="opcua-job-order-control")
        try:
            try:  # never leave the collector off for long (a build failing over and over)
                async with asyncio.timeout(GC_PAUSE_LIMIT):
                    await asyncio.shield(self.mirror.built.wait())
            except TimeoutError:
                gc.enable()
                await self.mirror.built.wait()
            self.build_seconds = self.mirror.build_seconds
            gc.freeze()
            gc.enable()
            await self._publish_build_time()
            self.service_level.ready = True
            await self.service_level.update()
            Privacy.of(self.server).farm_built = True
            self.ready.set()
            log.info("OPC UA farm ready %.2f s after start (model %.2f s, farm %.2f s, %d nodes)",
                     time.perf_counter() - started, self.model_seconds,
                     self.build_seconds or 0.0, self.space.node_count)
            await run
        finally:
            gc.enable()
            run.cancel()
            values.cancel()
            for task in (run, values):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _job_management(self) -> Node:
        """Objects/PrintFarm/JobManagement (Machinery Jobs' JobManagementType): the farm takes
        job orders as a whole; returns its JobOrderControl (for the ISA95 methods)."""
        jobs_ns = await self.server.get_namespace_index(MACHINERY_JOBS_URI)
        farm = self.server.get_node(ua.NodeId("PrintFarm", self.farm_ns))
        await instantiate(farm, self.server.get_node(ua.NodeId(1003, jobs_ns)),
                          nodeid=ua.NodeId(FARM_JOB_MANAGEMENT, self.farm_ns),
                          bname=ua.QualifiedName("JobManagement", jobs_ns),
                          instantiate_optional=False)
        return self.server.get_node(ua.NodeId(FARM_JOB_ORDER_CONTROL, self.farm_ns))

    def _server_uris(self) -> list[str]:
        nodes = sorted({self.settings.raft_self, *self.settings.peers})
        return [application_uri(n) for n in nodes]

    async def _publish_build_time(self) -> None:
        folder = self.server.get_node(ua.NodeId("PrintFarm", self.farm_ns))
        await folder.add_variable(
            ua.NodeId("PrintFarm/AddressSpaceBuildSeconds", self.farm_ns),
            ua.QualifiedName("AddressSpaceBuildSeconds", self.farm_ns),
            ua.Variant(float(self.build_seconds or 0.0), ua.VariantType.Double))


# ---------------------------------------------------------------------------- security, methods

async def _secure(embedded: EmbeddedServer) -> None:
    """Certificates, policies and the accounts' passwords (after init, before start)."""
    await secure(embedded.server, embedded.settings, password_check(embedded.node))


async def _attach_methods(embedded: EmbeddedServer) -> None:
    """SubmitJob on PrintFarm, the ISA95 methods on JobOrderControl, and Pause, Resume,
    Cancel, ClearBed on each printer (through `AddressSpace.printer_hooks`, called whenever
    a printer object is created; a deleted printer takes its methods with it)."""
    if embedded.space is None:
        return
    async def shown(index: int) -> bool:
        mirror = embedded.mirror
        return mirror is None or await mirror.wait_shown(index, SHOWN_TIMEOUT)

    roles = Privacy.of(embedded.server).method_roles
    farm = FarmMethods.for_node(embedded.node, shown, roles.__setitem__)
    ns = embedded.farm_ns
    server = embedded.server
    await farm.add_farm_methods(server.get_node(ua.NodeId("PrintFarm", ns)), ns)
    if embedded.job_order_control is not None:
        results = server.get_node(ua.NodeId(FARM_JOB_ORDER_RESULTS, ns))
        await farm.add_job_order_control(embedded.job_order_control, ns)
        await farm.add_job_order_results(results, ns)
        # Each printer's JobManagement references these methods (answered for its jobs).
        for part, owner in (("JobOrderControl", embedded.job_order_control),
                            ("JobOrderResults", results)):
            methods = await owner.get_children(refs=ua.ObjectIds.HasComponent,
                                               nodeclassmask=ua.NodeClass.Method)
            embedded.space.job_methods[part] = tuple(m.nodeid for m in methods)

    async def add_printer_methods(nodeid: ua.NodeId, printer_id: str) -> None:
        await farm.add_printer_methods(server.get_node(nodeid), printer_id, ns)

    embedded.space.printer_hooks.append(add_printer_methods)
