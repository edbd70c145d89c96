"""One farm node: its state machine, its Raft engine and its command writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import Connection

from mes.advertised import advertised_opcua_url
from mes.app.commands import CommandDoor
from mes.app.errors import DomainError
from mes.auth.authenticator import Authenticator
from mes.auth.bootstrap import ensure_admin
from mes.auth.failed_sign_ins import FailedSignIns
from mes.auth.oidc import verifier_from
from mes.auth.oidc_users import OidcUsers
from mes.auth.throttle import SignInGuard
from mes.cluster_secret import blob_token, raft_password, raft_secret
from mes.config import ConfigError, Settings
from mes.data_version import check_and_mark
from mes.events.hub import EventHub
from mes.farm_log import farm_logger
from mes.files.peers import BlobPeers
from mes.files.store import BlobStore
from mes.files.sync import run_sync
from mes.full_collections import FullCollections
from mes.metrics.node import NodeMetrics
from mes.private_dirs import make_private
from mes.raft.cluster import ROLES, cluster_view
from mes.raft.membership import MembershipRefused, MembershipTimeout, change
from mes.raft.node import RaftNode, RaftTuning, build_conf
from mes.raft.read_barrier import AppliedWaiter, Linearizer
from mes.raft.readiness import RaftProgress, not_ready_reasons, progress_of, write_refusal
from mes.raft.snapshot import SnapshotFiles
from mes.raft.writer import NoLeader, Writer
from mes.state import cluster_versions, queries
from mes.state.commands import current_version
from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from mes.version import DATA_LEVEL, RELEASE
from mes.versions import ClusterVersion, VersionReporter
from mes.workers.host import WorkerHost

if TYPE_CHECKING:
    from mes.files.sweep import BlobSweeper
    from mes.notify.loop import DeliveryLoop
    from mes.opcua.external import ExternalWriter
    from mes.opcua.server import EmbeddedServer

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long stopping waits for background tasks, and for each part that closes after them.
STOP_SECONDS = 10.0


class FarmNode:
    """Owns the pieces of a node and their lifetime."""

    def __init__(self, settings: Settings, tuning: RaftTuning | None = None) -> None:
        if settings.peers and not settings.cluster_secret:  # load_settings says so first
            raise ConfigError("CLUSTER_SECRET: required when RAFT_PEERS names other nodes")
        self.settings = settings
        # Before anything is read: a data directory of a newer release is refused.
        make_private(settings.data_dir, settings.upload_path)
        check_and_mark(settings.data_dir)
        self.machine = StateMachine(settings.database_url, scratch_dir=settings.data_dir)
        self.snapshots = SnapshotFiles(self.machine)
        # Before Raft starts: the stream's window sees the journal replayed at start too.
        self.events = EventHub(self.machine.read, settings.events.window,
                               settings.events.client_queue)
        self.machine.add_listener(self.events.on_apply)
        self.machine.add_restore_listener(self.events.on_restore)
        raft = settings.raft
        conf = build_conf(raft.data_dir, self.snapshots, raft.snapshot_entries,
                          raft.snapshot_interval, tuning or RaftTuning(), raft.bind_address,
                          raft_password(raft_secret(raft.cluster_secret, raft.data_dir)))
        self.raft = RaftNode(raft.self_address, list(raft.peers), self.machine, conf,
                             self.snapshots, raft.sync_trace)
        self.machine.add_listener(farm_logger(self.raft.is_leader))
        self.cluster_version = ClusterVersion(self.machine.read)
        self.machine.add_listener(self.cluster_version.on_apply)
        self.machine.add_restore_listener(self.cluster_version.on_restore)
        self.writer = Writer(self.raft, raft.write_timeout,
                             self.cluster_version.writable,
                             lambda: write_refusal(self.progress()))
        self.applied = AppliedWaiter(lambda: int(self.raft.raftLastApplied))
        self.machine.add_listener(self.applied.on_apply)
        self.linearizer = Linearizer(self._commit_noop)
        # The one door through which every interface submits a principal's command.
        self.commands = CommandDoor(self.writer, self.read)
        verifier = verifier_from(settings)
        oidc = OidcUsers(verifier, self.read, self.writer.submit) if verifier else None
        self.auth = Authenticator(self.read, self._record_token_use,
                                  lambda: not self.raft.is_leader(), oidc,
                                  lambda: self.machine.applied_count,
                                  settings.mes_admin_token or None,
                                  lambda: "; ".join(not_ready_reasons(self.progress()))
                                  or None)
        self.machine.add_listener(self.auth.on_apply)
        # Password sign-in (REST and OPC UA), throttled per account and source.
        self.failed_sign_ins = FailedSignIns(self.submit)
        self.sign_in = SignInGuard(self.read, on_failure=self.failed_sign_ins.failed)
        self.metrics = NodeMetrics(self)
        self.machine.add_listener(self.metrics.on_apply)
        self.blobs = BlobStore(settings.upload_path)
        self.peers = BlobPeers(self.blobs, settings.advertise_url,
                               token=blob_token(settings.cluster_secret))
        self._background: list[asyncio.Task[None]] = []
        # The lease, the printer workers and (on the leader) the balancer: mes/workers.
        self.workers: WorkerHost | None = None
        self.sweeper: BlobSweeper | None = None
        self.deliveries: DeliveryLoop | None = None
        self.opcua: EmbeddedServer | None = None
        self.full_collections: FullCollections | None = None
        log.info("raft node %s started with peers %s", settings.raft_self, settings.peers or "none")

    async def read(self, query: Callable[[Connection], T]) -> T:
        """Read the applied state on a worker thread, off the event loop."""
        return await asyncio.to_thread(self.machine.read, query)

    # What the workers need of the node (mes.workers.ports.FarmPort).

    @property
    def self_address(self) -> str:
        """This node's Raft address."""
        return self.settings.raft_self

    @property
    def farm_version(self) -> int:
        """Changes whenever a command that can change the farm is applied here (workers re-read
        their view of the farm then)."""
        return self.machine.farm_version

    def read_now(self, query: Callable[[Connection], T]) -> T:
        """Read the applied state on the calling thread (short reads)."""
        return self.machine.read(query)

    async def submit(self, op: str, args: Mapping[str, Any], remember: bool = True) -> Outcome:
        """Commit a command of the farm itself (no user's)."""
        return await self.writer.submit(op, args, remember=remember)

    def is_leader(self) -> bool:
        """Whether this node leads now."""
        return bool(self.raft.is_leader())

    async def on_leading(self) -> None:
        """The first leader creates the admin."""
        await ensure_admin(self)

    def on_apply(self, listener: Callable[[Mapping[str, Any], Outcome], None]) -> None:
        """Tell `listener` of every applied command (on the Raft thread)."""
        self.machine.add_listener(listener)

    def on_restore(self, listener: Callable[[], None]) -> None:
        """Tell `listener` whenever a snapshot replaced the state (on the Raft thread)."""
        self.machine.add_restore_listener(listener)

    # Read levels (mes.app.ports.ReadLevels).

    def applied_index(self) -> int:
        """The Raft index this node has applied."""
        return self.applied.applied()

    async def wait_applied(self, index: int, timeout: float) -> bool:
        """Whether this node applied `index` within `timeout` seconds."""
        return await self.applied.wait(index, timeout)

    async def barrier(self) -> int:
        """Commit a no-op through the leader and return its index once applied here."""
        try:
            return await self.linearizer.barrier()
        except NoLeader as exc:
            raise DomainError("unavailable", "no_leader",
                              f"a linearizable read needs a leader: {exc}") from None

    def read_at_applied(self, query: Callable[[Connection], T]) -> tuple[int, T]:
        """Run `query` on the applied state and return it with the index it reflects
        (blocks: call it off the event loop)."""
        index, value = self.raft.read_at_applied(lambda: self.machine.read(query))
        return int(index), value

    def members(self) -> list[str]:
        """The cluster's members' Raft addresses (nodes added or removed included)."""
        return list(self.raft.members())

    def progress(self) -> RaftProgress:
        """This node's Raft progress (leader, applied and commit indexes), no query."""
        return progress_of(self.raft)

    def raft_alive(self) -> bool:
        """Whether this node's Raft thread runs."""
        return bool(self.raft.tick_thread_alive())

    def listener_problems(self) -> list[str]:
        """Why a listener this node should have does not serve: the embedded OPC UA server
        while it binds, or when it could not."""
        if self.settings.opcua.mode != "embedded" or self.opcua is None:
            return []
        problem = self.opcua.problem()
        return [problem] if problem else []

    def raft_status(self) -> dict[str, Any]:
        """pysyncobj's status of this node (its role is `state`)."""
        status: dict[str, Any] = self.raft.getStatus()
        return status

    def role(self) -> str:
        """This node's Raft role now: leader, follower, candidate (or unknown)."""
        return ROLES.get(self.raft_status()["state"], "unknown")

    async def change_membership(self, action: Literal["add", "remove"], address: str) -> None:
        """Commit adding or removing a node; DomainError `rule` if the leader refuses,
        `unavailable` if no leader committed it in time."""
        try:
            await change(self.raft, action, address, self.settings.raft_write_timeout)
        except MembershipRefused as exc:
            raise DomainError("rule", "membership_change_refused", str(exc)) from None
        except MembershipTimeout as exc:
            raise DomainError("unavailable", "no_leader", str(exc)) from None

    def state_image(self) -> tuple[int, bytes]:
        """The applied state as a database image and the index it was taken at (blocks:
        call it off the event loop)."""
        index, image = self.raft.read_at_applied(self.machine.snapshot)
        return int(index), image

    # Live printer status (mes.app.ports.PrinterStatus).

    def printer_seen_at(self, printer_id: str) -> float | None:
        """When this node's worker last heard from the printer (None: not driven here)."""
        pool = self.workers.pool if self.workers is not None else None
        live = pool.ctx.seen.get(printer_id) if pool is not None else None
        return live.at if live is not None else None

    def workers_running(self) -> int:
        """How many printer workers run on this node."""
        pool = self.workers.pool if self.workers is not None else None
        return len(pool.workers) if pool is not None else 0

    def workers_view(self) -> dict[str, Any]:
        """This node's printer workers, its lease and, on the leader, the balancer."""
        host = self.workers
        if host is None:
            return {"running": False}
        extra: dict[str, Any] = {"lease_remaining": round(host.lease.remaining(), 3),
                                 "lease_renewals": host.lease.renewals}
        if host.leader is not None:
            extra["balancer"] = {"epoch": host.leader.epoch, "commands": host.leader.commands,
                                 "expired": host.leader.expired}
        if host.pool is None:
            return {"running": False, **extra}
        return {"running": True, **host.pool.stats(), **extra}

    async def _commit_noop(self) -> int:
        """Commit a no-op (a linearizable read's barrier); its index once applied here."""
        outcome = await self.writer.submit(Op.NOOP, {}, remember=False)
        return outcome.index

    async def _record_token_use(self, token_id: str, at: float) -> None:
        await self.writer.submit(Op.TOKEN_USED, {"id": token_id, "at": at}, remember=False)

    def cluster(self) -> dict[str, Any]:
        """This node's view of the cluster, with the REST URL and OPC UA endpoint each node
        announced."""
        view = cluster_view(self.raft.getStatus(), self.machine.applied_count)
        announced = {n["raft_address"]: n for n in self.machine.read(queries.list_nodes)}
        versions = self.machine.read(cluster_versions.reported)
        for entry in view["nodes"]:
            node = announced.get(entry["address"], {})
            entry["http_url"] = node.get("http_url")
            # None: no OPC UA server there, or not announced yet (a release before 0.6.0).
            entry["opcua_url"] = node.get("opcua_url")
            # What the node reported through Raft (None: not yet, or an older release).
            reported = versions.get(entry["address"], {})
            entry["version"] = reported.get("release")
            entry["level"] = reported.get("level")
        # This node's own release, and the data level the whole cluster may use.
        view["version"] = RELEASE
        view["level"] = DATA_LEVEL
        view["cluster_version"] = self.cluster_version.level()
        view["pre_vote"] = self.raft.pre_vote_status()
        collections = self.full_collections
        view["full_collections"] = None if collections is None else collections.status()
        # This node's embedded OPC UA server: whether its address space is built yet.
        view["opcua"] = self.opcua.status() if self.opcua is not None else None
        return view

    @property
    def cluster_size(self) -> int:
        """How many nodes the cluster has, this one included (nodes added or removed
        through the API count)."""
        return len(self.raft.members())

    def peer_urls(self) -> list[str]:
        """The REST URLs the other nodes announced."""
        me = self.settings.raft_self
        return [n["http_url"] for n in self.machine.read(queries.list_nodes)
                if n["raft_address"] != me]

    async def hold_blob(self, sha: str) -> bool:
        """Whether this node holds the file, after fetching it from a peer if it lacked it."""
        return await self.peers.fetch(sha, self.peer_urls())

    async def blob(self, sha: str) -> bytes | None:
        """A stored file's content, fetched from a peer if this node lacks it."""
        return self.blobs.read(sha) if await self.hold_blob(sha) else None

    async def start_background(self) -> None:
        """Announce this node's URL, renew its lease, drive its printers, sweep blobs,
        deliver notifications, and balance the printers and prune whenever this node leads."""
        from mes.files.sweep import BlobSweeper
        from mes.notify.loop import DeliveryLoop
        from mes.workers.retention import run_retention

        self.events.attach(asyncio.get_running_loop())
        self.workers = WorkerHost(self, metrics=self.metrics.workers,
                                  leader_tasks=[lambda: run_retention(self)],
                                  status_sink=self._external_writer)
        self.sweeper = BlobSweeper(self)
        self.deliveries = DeliveryLoop(self)
        self._background = [asyncio.create_task(self._announce(), name="announce"),
                            asyncio.create_task(self.workers.run(), name="workers"),
                            asyncio.create_task(self.sweeper.run(), name="blob-sweep"),
                            asyncio.create_task(run_sync(self.machine, self.blobs.has,
                                                         self.hold_blob), name="file-sync"),
                            asyncio.create_task(self.deliveries.run(), name="deliveries"),
                            asyncio.create_task(self.metrics.runtime.probe_loop(),
                                                name="loop-lag-probe"),
                            asyncio.create_task(self.versions_reporter().run(),
                                                name="versions"),
                            asyncio.create_task(self.failed_sign_ins.run(),
                                                name="failed-sign-ins")]
        self.full_collections = FullCollections(
            self.settings.gc_full_interval,
            lambda: not self.is_leader() or len(self.members()) <= 1,
            hand_off=self.raft.hand_off)
        self._background.append(asyncio.create_task(self.full_collections.run(),
                                                    name="full-collections"))
        if self.settings.opcua.mode == "embedded":
            from mes.opcua.server import EmbeddedServer

            self.opcua = EmbeddedServer(self)
            # Never delays the REST API: the server binds and builds on its own thread.
            self._background.append(asyncio.create_task(self._start_opcua(self.opcua),
                                                        name="opcua-start"))

    def _external_writer(self) -> ExternalWriter | None:
        """External-server mode: each worker pool writes its printers into the lab's server."""
        from mes.opcua.external import ExternalWriter, external_enabled

        group = self.settings.opcua
        return ExternalWriter(group) if external_enabled(group) else None

    def versions_reporter(self) -> VersionReporter:
        """Reports this node's release through Raft; leading, raises the cluster version."""
        # Not remembered by request id: a node of an older release rejects these commands,
        # and its request memory (replicated state) must not hold what newer nodes do not.
        return VersionReporter(self.settings.raft_self, self.machine.read,
                               lambda op, args: self.writer.submit(op, args, remember=False),
                               self.is_leader, self.raft.members, self.cluster_version,
                               self.raft.follow_cluster_level)

    @staticmethod
    async def _start_opcua(server: EmbeddedServer) -> None:
        try:
            await server.start()
        except Exception as exc:
            log.error("the OPC UA server could not start at %s: %s",
                      server.settings.endpoint, exc)

    async def _announce(self) -> None:
        """Announce where this node listens; once more when the cluster version first allows
        the OPC UA endpoint in it (a rolling upgrade wrote it without)."""
        args = {"raft_address": self.settings.raft_self, "http_url": self.settings.advertise_url,
                "opcua_url": (advertised_opcua_url(self.settings.opcua.endpoint,
                                                   self.settings.advertise_url)
                              if self.settings.opcua.mode == "embedded" else None)}
        endpoints_level = current_version(Op.NODE_ANNOUNCE)
        announced_at = 0  # the cluster version of the last announcement that applied
        while announced_at < endpoints_level:
            level = self.cluster_version.level()
            if level > announced_at:
                with contextlib.suppress(Exception):
                    if (await self.writer.submit(Op.NODE_ANNOUNCE, args)).ok:
                        announced_at = level
            await asyncio.sleep(1.0)

    async def stop_background(self) -> None:
        """Stop the workers and the announcement; end the event streams."""
        self.events.close()
        for task in self._background:
            task.cancel()
        if self._background:
            # Bounded: a task that does not end after its cancellation must not hold up the
            # node's shutdown; it is named in the log instead.
            _, stuck = await asyncio.wait(self._background, timeout=STOP_SECONDS)
            for task in stuck:
                log.error("background task %s did not stop within %g s after being "
                          "cancelled", task.get_name(), STOP_SECONDS)
        self._background = []
        for name, closing in (("OPC UA server", self._stop_opcua()),
                              ("file peers", self.peers.aclose()),
                              ("authenticator", self.auth.aclose())):
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await closing
            except TimeoutError:
                log.error("the %s did not stop within %g s", name, STOP_SECONDS)

    async def _stop_opcua(self) -> None:
        if self.opcua is not None:
            await self.opcua.stop()
            self.opcua = None

    def close(self) -> None:
        """Stop Raft and release the database."""
        self.raft.destroy_synchronous()
        self.machine.close()
