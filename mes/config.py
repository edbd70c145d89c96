"""Node configuration from the environment or `.env` (names as in docs/configuration.md)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mes.config_groups import (
    EventSettings,
    HttpSettings,
    NotifySettings,
    OpcuaMode,
    OpcuaSettings,
    PrinterSettings,
    QuotaSettings,
    RaftSettings,
    RetentionSettings,
)
from mes.networks import Networks, Targets, parse_networks

MIN_SECRET_LENGTH = 16
GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the operator."""


def parse_host_port(value: str, name: str) -> str:
    """Return `value` if it is `host:port` with a valid port, else raise ValueError."""
    match = _HOST_PORT.match(value.strip())
    if not match or not 0 < int(match.group("port")) < 65536:
        raise ValueError(f"{name}: {value!r} is not host:port")
    return value.strip()


OPCUA_POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
OPCUA_MODES = ("Sign", "SignAndEncrypt")


def parse_opcua_security(value: str) -> tuple[str, str] | None:
    """OPCUA_SECURITY as (policy, mode), None for no security; ValueError if malformed."""
    value = value.strip()
    if value in ("", "None", "None,None"):
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or parts[0] not in OPCUA_POLICIES or parts[1] not in OPCUA_MODES:
        raise ValueError(f"OPCUA_SECURITY: {value!r} is not 'Policy,Mode' with Policy one of "
                         f"{', '.join(OPCUA_POLICIES)} and Mode one of {', '.join(OPCUA_MODES)}")
    return parts[0], parts[1]


class Settings(BaseSettings):
    """Effective configuration of one node."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = "sqlite+aiosqlite://"
    # OPC UA: `embedded` (this node serves the farm's address space at OPCUA_ENDPOINT),
    # `external` (it writes its printers into the lab's server at OPCUA_SERVER_URL) or `off`.
    # Empty: the older form, deprecated: OPCUA_SERVER_URL containing "mock" is embedded,
    # any other URL external, and OPCUA_ENABLED=false is off.
    opcua_mode: Literal["", "embedded", "external", "off"] = ""
    opcua_server_url: str = "opc.tcp://mock-server:4840"
    opcua_endpoint: str = "opc.tcp://0.0.0.0:4840/mes/"
    # false: no OPC UA at all, whatever the mode (the older form of OPCUA_MODE=off).
    opcua_enabled: bool = True
    upload_path: Path = Path("./upload")
    max_upload_mb: int = Field(200, gt=0, le=10_000)
    # What one user (not an operator or admin) may hold at once; 0: no limit. Stored bytes of
    # their uploads, jobs waiting or printing, orders with such jobs, live API tokens.
    quota_upload_mb: int = Field(2048, ge=0, le=10_000_000)
    quota_jobs: int = Field(100, ge=0, le=1_000_000)
    quota_orders: int = Field(20, ge=0, le=1_000_000)
    quota_tokens: int = Field(20, ge=0, le=1_000_000)
    auto_schedule: bool = True
    auto_clear_bed: bool = False
    printer_worker_interval: float = Field(1.0, gt=0, le=3600)
    # How long a node's lease lasts without renewal, and how often each node renews it.
    node_lease_seconds: float = Field(10.0, gt=0.5, le=3600)
    node_lease_renew: float = Field(2.0, gt=0, le=600)
    # Seconds between the leader's balancing passes (assignments and lease expiry).
    shard_balance_interval: float = Field(0.5, gt=0, le=600)
    # How long (on this node's clock) a sent or inherited start may take to show at the
    # printer before the job goes back to the queue; a start arriving later is cancelled.
    printer_start_grace: float = Field(15.0, gt=0, le=3600)
    # Comma-separated CIDRs printers may be at (empty: anywhere); checked when a printer's
    # URL is given and again before every connection to a printer.
    printer_networks: str = ""
    # Whether printers and webhooks may be at loopback, unspecified ("0.0.0.0"), link-local
    # or cloud-metadata addresses (the server's own host and its cloud's secrets): refused
    # unless set (tests and a printer emulator on the same machine set it).
    allow_local_addresses: bool = False
    mock_printer_interval: float = Field(0.1, gt=0, le=60)
    mock_printer_job_time: int = Field(30, gt=0, le=1_000_000)
    mock_printer_target_bed_temperature: float = Field(60.0, ge=0, le=150)
    mock_printer_target_bed_nozzle: float = Field(210.0, ge=0, le=350)
    http_host: str = "0.0.0.0"
    http_port: int = Field(8000, ge=0, lt=65536)
    http_advertise_url: str = ""
    raft_self: str = "127.0.0.1:7000"
    raft_peers: str = ""
    raft_bind: str = ""
    # Shared by every node: encrypts and authenticates Raft, authorises blob copies.
    cluster_secret: str = ""
    data_dir: Path = Path("./data")
    raft_write_timeout: float = Field(5.0, gt=0, le=120)
    raft_snapshot_entries: int = Field(5000, ge=2)
    raft_snapshot_interval: float = Field(300.0, gt=0)
    # Retention: finished jobs (with their history, emptied orders and files no job prints)
    # and audit entries older than this many days are deleted by the leader; 0 keeps them.
    job_retention_days: float = Field(365.0, ge=0)
    audit_retention_days: float = Field(365.0, ge=0)
    # Seconds between the leader's retention passes and between each node's blob sweeps.
    retention_interval: float = Field(3600.0, gt=0)
    # Seconds between full garbage collections (the interpreter makes none of its own: one
    # stops the process for seconds at a big farm); a node leading peers skips them.
    gc_full_interval: float = Field(300.0, gt=0, le=86_400)
    # A G-code blob no file record names is deleted from disk only once it is this old
    # (an upload stores its blob before it commits the record).
    blob_grace_seconds: float = Field(3600.0, ge=0)
    # Tests only: record the synced journal length in `<journal>.synced` (power-cut test).
    raft_sync_trace: bool = False
    # The first admin's API token (used only when the state has no admin yet).
    mes_admin_token: str = Field("", max_length=4096)
    # Jobs submitted by the `user` role wait for an operator's approval.
    require_approval: bool = False
    # /metrics without a token (a scraper on a trusted network); false: operators and admins.
    metrics_public: bool = False
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    http_access_log: bool = False
    # OpenID Connect bearer JWTs: all three of issuer, audience and JWKS URL, or none.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_role_claim: str = ""
    # OPC UA: also serve security None and anonymous sessions, both read-only.
    opcua_allow_anonymous: bool = False
    # A directory of trusted OPC UA client certificates (DER or PEM); empty accepts any
    # client certificate (user name and password still decide what a session may do).
    opcua_trusted_certs: str = ""
    # Host names and IP addresses clients reach this node's OPC UA server by (comma
    # separated), written into its certificate; empty: the endpoint's host (or this
    # machine's name when the endpoint listens on every address).
    opcua_host_names: str = ""
    # External-server mode (OPCUA_SERVER_URL without "mock"): the lab's central OPC UA server.
    opcua_server_namespace: str = "http://monashautomation.com/opcua-server"
    opcua_security: str = ""  # "Policy,Mode" e.g. "Basic256Sha256,SignAndEncrypt"; empty: None
    opcua_username: str = ""
    opcua_password: str = ""
    # GET /api/v1/events: keep-alive comment period, the client's reconnect delay, how many
    # recent events each node keeps for resuming, how many one client may have queued, and
    # how long a resume waits for this node to reach an id it has not applied yet.
    sse_keepalive: float = Field(15.0, gt=0, le=3600)
    sse_retry_ms: int = Field(2000, ge=0, le=3_600_000)
    sse_window: int = Field(10_000, ge=1, le=10_000_000)
    sse_client_queue: int = Field(1000, ge=1, le=1_000_000)
    sse_resume_wait: float = Field(5.0, ge=0, le=600)
    # Webhooks: where their URLs may point (CIDRs; empty: anywhere), one attempt's timeout,
    # the first retry's delay (doubling up to the cap) and how long after the event the
    # farm keeps trying before the delivery is marked failed.
    webhook_networks: str = ""
    webhook_timeout: float = Field(10.0, gt=0, le=300)
    webhook_retry_base: float = Field(5.0, gt=0, le=86_400)
    webhook_retry_cap: float = Field(3600.0, gt=0, le=86_400)
    webhook_max_age: float = Field(86_400.0, ge=0, le=30 * 86_400)
    # How often the leader looks for deliveries whose retry is due (new ones go at once).
    notify_interval: float = Field(1.0, gt=0, le=3600)
    # E-mail to job owners: smtp://user:pass@host:port (STARTTLS when the server offers it),
    # smtps://... (TLS from the start); empty: no e-mail. MAIL_FROM is the sender.
    smtp_url: str = ""
    mail_from: str = "mes@localhost"
    # HTTPS for the REST listener: a PEM certificate (chain) and its PEM private key, both or
    # neither (checked at start: readable, unencrypted key, key matches the certificate).
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @field_validator("database_url")
    @classmethod
    def _sqlite_only(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if "://" not in value or scheme.split("+", 1)[0] != "sqlite":
            raise ValueError(f"DATABASE_URL: {value!r} is not an sqlite URL (sqlite+aiosqlite://...)")
        return value

    @field_validator("opcua_server_url", "opcua_endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError(f"{value!r} is not an opc.tcp://host:port URL")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r} has an invalid port") from exc
        return value

    @field_validator("http_advertise_url")
    @classmethod
    def _advertise(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"HTTP_ADVERTISE_URL: {value!r} is not an http(s) URL")
        return value

    @field_validator("raft_self")
    @classmethod
    def _self_address(cls, value: str) -> str:
        return parse_host_port(value, "RAFT_SELF")

    @field_validator("raft_bind")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        return parse_host_port(value, "RAFT_BIND") if value.strip() else ""

    @field_validator("raft_peers")
    @classmethod
    def _peer_addresses(cls, value: str) -> str:
        peers = [p.strip() for p in value.split(",") if p.strip()]
        for peer in peers:
            parse_host_port(peer, "RAFT_PEERS")
        return ",".join(peers)

    @field_validator("opcua_host_names")
    @classmethod
    def _host_names(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        for name in names:
            if len(name) > 253 or any(c.isspace() or c in "/?#@" for c in name):
                raise ValueError(f"OPCUA_HOST_NAMES: {name[:60]!r} is not a host name or an "
                                 "IP address")
        return ",".join(names)

    @field_validator("printer_networks")
    @classmethod
    def _printer_networks(cls, value: str) -> str:
        return ",".join(str(n) for n in parse_networks(value))

    @field_validator("webhook_networks")
    @classmethod
    def _webhook_networks(cls, value: str) -> str:
        try:
            return ",".join(str(n) for n in parse_networks(value))
        except ValueError as exc:
            raise ValueError(str(exc).replace("PRINTER_NETWORKS", "WEBHOOK_NETWORKS")) from None

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if value and (parts.scheme not in ("smtp", "smtps") or not parts.hostname):
            raise ValueError(f"SMTP_URL: {_mask_url(value)!r} is not smtp://[user:pass@]host"
                             "[:port] or smtps://...")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("SMTP_URL: invalid port") from None
        return value

    @field_validator("mes_admin_token")
    @classmethod
    def _admin_token(cls, value: str) -> str:
        value = value.strip()
        if value and (len(value) < 24 or not value.isascii() or not value.isprintable()
                      or " " in value):
            raise ValueError("MES_ADMIN_TOKEN: use at least 24 printable ASCII characters "
                             "without spaces")
        return value

    @field_validator("cluster_secret")
    @classmethod
    def _secret_length(cls, value: str) -> str:
        if value and len(value) < MIN_SECRET_LENGTH:
            raise ValueError(f"CLUSTER_SECRET: at least {MIN_SECRET_LENGTH} characters "
                             f"(generate one: {GENERATE_SECRET})")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LOG_LEVEL: {value!r} is not a logging level")
        return value.upper()

    @field_validator("opcua_security")
    @classmethod
    def _opcua_security(cls, value: str) -> str:
        parse_opcua_security(value)
        return value.strip()

    @field_validator("oidc_issuer", "oidc_audience", "oidc_jwks_url", "oidc_role_claim")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("oidc_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"OIDC_JWKS_URL: {value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _lease_renewed_in_time(self) -> Settings:
        usable = self.node_lease_seconds - max(0.5, self.node_lease_seconds / 5)
        if self.node_lease_renew * 2 > usable:
            raise ValueError(f"NODE_LEASE_RENEW ({self.node_lease_renew:g} s) must leave room "
                             f"for two renewals within NODE_LEASE_SECONDS less its margin "
                             f"({usable:g} s)")
        return self

    @model_validator(mode="after")
    def _listeners_apart(self) -> Settings:
        # Two listeners on one port: the Raft transport took it first and read every HTTP
        # request as a frame, and the node neither served nor exited.
        wildcard = ("", "0.0.0.0", "::", "[::]")
        listeners = [("HTTP_PORT", self.http_host, self.http_port),
                     ("RAFT_BIND" if self.raft_bind else "RAFT_SELF",
                      *_host_and_port(self.raft_bind_address))]
        if self.opcua_mode_in_effect == "embedded":
            parts = urlsplit(self.opcua_endpoint)
            listeners.append(("OPCUA_ENDPOINT", parts.hostname or "", parts.port or 4840))
        for i, (name, host, port) in enumerate(listeners):
            for other, other_host, other_port in listeners[i + 1:]:
                if port == other_port and (host in wildcard or other_host in wildcard
                                           or host.strip("[]") == other_host.strip("[]")):
                    raise ValueError(f"{name} and {other} both use port {port}: give each "
                                     "listener its own port")
        return self

    @model_validator(mode="after")
    def _external_needs_url(self) -> Settings:
        if self.opcua_mode == "external" and "opcua_server_url" not in self.model_fields_set:
            raise ValueError("OPCUA_MODE=external needs OPCUA_SERVER_URL (the lab's OPC UA "
                             "server, opc.tcp://host:port)")
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        names = ("oidc_issuer", "oidc_audience", "oidc_jwks_url")
        missing = [name.upper() for name in names if not getattr(self, name)]
        if 0 < len(missing) < len(names):
            raise ValueError(f"OpenID Connect needs OIDC_ISSUER, OIDC_AUDIENCE and OIDC_JWKS_URL "
                             f"together; missing: {', '.join(missing)}")
        return self

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _tls_path(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            missing = "TLS_KEY_FILE" if self.tls_cert_file else "TLS_CERT_FILE"
            raise ValueError(f"HTTPS needs TLS_CERT_FILE and TLS_KEY_FILE together; "
                             f"missing: {missing}")
        return self

    @property
    def oidc_enabled(self) -> bool:
        """True when bearer JWTs from an OpenID Connect provider are accepted."""
        return bool(self.oidc_issuer)

    @property
    def tls_enabled(self) -> bool:
        """True when the REST listener serves HTTPS itself (TLS_CERT_FILE and TLS_KEY_FILE)."""
        return bool(self.tls_cert_file)

    @property
    def peers(self) -> list[str]:
        """The other nodes' Raft addresses, without this node's own."""
        return [p for p in self.raft_peers.split(",") if p and p != self.raft_self]

    @property
    def printer_network_list(self) -> Networks:
        """PRINTER_NETWORKS parsed (empty: printers may be anywhere)."""
        return parse_networks(self.printer_networks)

    @property
    def webhook_network_list(self) -> Networks:
        """WEBHOOK_NETWORKS parsed (empty: webhooks may point anywhere)."""
        return parse_networks(self.webhook_networks)

    @property
    def printer_targets(self) -> Targets:
        """Where printers may be: PRINTER_NETWORKS and ALLOW_LOCAL_ADDRESSES."""
        return Targets(self.printer_network_list, self.allow_local_addresses)

    @property
    def webhook_targets(self) -> Targets:
        """Where webhooks may point: WEBHOOK_NETWORKS and ALLOW_LOCAL_ADDRESSES."""
        return Targets(self.webhook_network_list, self.allow_local_addresses)

    @property
    def raft_bind_address(self) -> str:
        """Where the Raft port listens: RAFT_BIND if set, else RAFT_SELF."""
        return self.raft_bind or self.raft_self

    @property
    def advertise_url(self) -> str:
        """The URL other nodes reach this node's REST API at."""
        if self.http_advertise_url:
            return self.http_advertise_url.rstrip("/")
        wildcard = self.http_host in ("0.0.0.0", "::", "")
        host = self.raft_self.rsplit(":", 1)[0] if wildcard else self.http_host
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{host}:{self.http_port}"

    @property
    def opcua_mode_in_effect(self) -> OpcuaMode:
        """OPCUA_MODE, or what the older settings select when it is not set."""
        if not self.opcua_enabled:
            return "off"
        if self.opcua_mode:
            return self.opcua_mode
        return "embedded" if "mock" in self.opcua_server_url else "external"

    @property
    def opcua_embedded(self) -> bool:
        """True when this node serves the embedded OPC UA server."""
        return self.opcua_mode_in_effect == "embedded"

    def deprecations(self) -> list[str]:
        """One line for each deprecated form this configuration uses (logged at start)."""
        lines = []
        if not self.opcua_mode and "opcua_server_url" in self.model_fields_set \
                and self.opcua_enabled:
            mode = self.opcua_mode_in_effect
            lines.append(f"OPCUA_SERVER_URL selects the OPC UA mode ({mode}) by "
                         f"{'containing' if mode == 'embedded' else 'not containing'} "
                         f"\"mock\"; this is deprecated: set OPCUA_MODE={mode}")
        return lines

    # Each component's group (mes.config_groups).

    @property
    def raft(self) -> RaftSettings:
        """The Raft engine's settings."""
        return RaftSettings(self.raft_self, tuple(self.peers), self.raft_bind_address,
                            self.raft_write_timeout, self.raft_snapshot_entries,
                            self.raft_snapshot_interval, self.raft_sync_trace,
                            self.cluster_secret, self.data_dir)

    @property
    def http(self) -> HttpSettings:
        """The REST listener's settings."""
        return HttpSettings(self.http_host, self.http_port, self.advertise_url,
                            self.http_access_log, self.max_upload_mb, self.tls_cert_file,
                            self.tls_key_file, self.metrics_public)

    @property
    def opcua(self) -> OpcuaSettings:
        """OPC UA's settings (the embedded server and the external writer)."""
        return OpcuaSettings(self.opcua_mode_in_effect, self.opcua_server_url,
                             self.opcua_endpoint, self.opcua_allow_anonymous,
                             self.opcua_trusted_certs, self.opcua_server_namespace,
                             self.opcua_security, self.opcua_username, self.opcua_password,
                             self.data_dir, self.raft_self, tuple(self.peers),
                             tuple(n.strip() for n in self.opcua_host_names.split(",")
                                   if n.strip()))

    @property
    def printers(self) -> PrinterSettings:
        """The printer workers' settings."""
        return PrinterSettings(
            self.printer_worker_interval, self.node_lease_seconds, self.node_lease_renew,
            self.shard_balance_interval, self.printer_start_grace, self.printer_targets,
            self.auto_schedule, self.auto_clear_bed, self.mock_printer_interval,
            self.mock_printer_job_time, self.mock_printer_target_bed_temperature,
            self.mock_printer_target_bed_nozzle)

    @property
    def notify(self) -> NotifySettings:
        """Webhooks' and e-mail's settings."""
        return NotifySettings(self.webhook_targets, self.webhook_timeout,
                              self.webhook_retry_base, self.webhook_retry_cap,
                              self.webhook_max_age, self.notify_interval, self.smtp_url,
                              self.mail_from)

    @property
    def retention(self) -> RetentionSettings:
        """Retention's settings."""
        return RetentionSettings(self.job_retention_days, self.audit_retention_days,
                                 self.retention_interval, self.blob_grace_seconds)

    @property
    def quotas(self) -> QuotaSettings:
        """The per-user quotas."""
        return QuotaSettings(self.quota_upload_mb, self.quota_jobs, self.quota_orders,
                             self.quota_tokens)

    @property
    def events(self) -> EventSettings:
        """The event stream's settings."""
        return EventSettings(self.sse_keepalive, self.sse_retry_ms, self.sse_window,
                             self.sse_client_queue, self.sse_resume_wait)


def _host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path, name: str) -> None:
    """Raise ConfigError unless `path` is (or can be created as) a writable directory."""
    existing = _nearest_existing(path)
    if existing == path.absolute() and not existing.is_dir():
        raise ConfigError(f"{name}: {path} is not a directory")
    try:  # os.access says yes to root everywhere; try for real
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}: {path} is not writable ({exc.strerror})") from None


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration, raising ConfigError with one clear line."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).upper()
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{field}: {message}" if field not in message else message) from None
    if settings.peers and not settings.cluster_secret:
        raise ConfigError("CLUSTER_SECRET: required when RAFT_PEERS names other nodes (the same "
                          f"on every node; generate one: {GENERATE_SECRET})")
    check_writable(settings.data_dir, "DATA_DIR")
    return settings


def _mask_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


SECRET_NAMES = ("password", "passwd", "secret", "key", "token", "credential")


def masked_items(settings: Settings) -> list[tuple[str, str]]:
    """The configuration as (NAME, value) pairs with passwords and keys masked."""
    items = []
    for name, value in settings.model_dump().items():
        text = str(value)
        if any(s in name for s in SECRET_NAMES) and text and not name.endswith("_file"):
            text = "***"
        elif "://" in text:
            text = _mask_url(text)
        items.append((name.upper(), text))
    return items
