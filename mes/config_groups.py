"""The settings of each part of a node, as the part receives them.

`mes.config.Settings` reads the environment (flat names, as documented); each group here is
the part of it one component needs, frozen: a component that is handed its group (the OPC
UA server, the external writer, the client factory, quotas) can neither read another's nor
change it, and the others read theirs through `settings.<group>`. A group is built from the
flat settings at each access (a few microseconds), so a setting changed at run time (tests
do) is seen by every component that reads per use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mes.networks import Targets

OpcuaMode = Literal["embedded", "external", "off"]


@dataclass(frozen=True)
class RaftSettings:
    """The Raft engine: addresses, timeouts, snapshots (RAFT_*, CLUSTER_SECRET, DATA_DIR)."""

    self_address: str
    peers: tuple[str, ...]
    bind_address: str
    write_timeout: float
    snapshot_entries: int
    snapshot_interval: float
    sync_trace: bool
    cluster_secret: str
    data_dir: Path


@dataclass(frozen=True)
class HttpSettings:
    """The REST listener (HTTP_*, TLS_*, MAX_UPLOAD_MB, METRICS_PUBLIC)."""

    host: str
    port: int
    advertise_url: str
    access_log: bool
    max_upload_mb: int
    tls_cert_file: str
    tls_key_file: str
    metrics_public: bool

    @property
    def tls_enabled(self) -> bool:
        """Whether the listener serves HTTPS itself."""
        return bool(self.tls_cert_file)


@dataclass(frozen=True)
class OpcuaSettings:
    """OPC UA (OPCUA_*): the embedded server, or the lab's external server we write into."""

    mode: OpcuaMode
    server_url: str
    endpoint: str
    allow_anonymous: bool
    trusted_certs: str
    server_namespace: str
    security: str
    username: str
    password: str
    data_dir: Path
    raft_self: str
    peers: tuple[str, ...]
    host_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrinterSettings:
    """Printer workers, leases, the balancer and mock printers (PRINTER_*, NODE_LEASE_*,
    SHARD_BALANCE_INTERVAL, AUTO_*, MOCK_PRINTER_*)."""

    worker_interval: float
    lease_seconds: float
    lease_renew: float
    balance_interval: float
    start_grace: float
    targets: Targets
    auto_schedule: bool
    auto_clear_bed: bool
    mock_interval: float
    mock_job_time: int
    mock_bed_temperature: float
    mock_nozzle_temperature: float


@dataclass(frozen=True)
class NotifySettings:
    """Webhooks and e-mail (WEBHOOK_*, NOTIFY_INTERVAL, SMTP_URL, MAIL_FROM)."""

    webhook_targets: Targets
    webhook_timeout: float
    retry_base: float
    retry_cap: float
    max_age: float
    interval: float
    smtp_url: str
    mail_from: str


@dataclass(frozen=True)
class RetentionSettings:
    """What the leader prunes and when (*_RETENTION_DAYS, RETENTION_INTERVAL,
    BLOB_GRACE_SECONDS)."""

    job_days: float
    audit_days: float
    interval: float
    blob_grace_seconds: float


@dataclass(frozen=True)
class QuotaSettings:
    """What one `user` may hold at once (QUOTA_*; 0: no limit)."""

    upload_mb: int
    jobs: int
    orders: int
    tokens: int


@dataclass(frozen=True)
class EventSettings:
    """The event stream, GET /api/v1/events (SSE_*)."""

    keepalive: float
    retry_ms: int
    window: int
    client_queue: int
    resume_wait: float
