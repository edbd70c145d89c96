"""SQLAlchemy Core tables holding the applied state of one node."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    text,
)

metadata = MetaData()

printers = Table(
    "printers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("company", String(200), nullable=False, default=""),
    Column("model", String(200), nullable=False, default=""),
    Column("url", String(2048)),
    Column("api", String(16)),
    Column("api_key", String(256)),
    Column("opcua_name", String(64), unique=True),
    Column("worker", Boolean, nullable=False, default=False),
    Column("group", String(200)),
    Column("camera_url", String(2048)),
    Column("filament_id", String(64)),
    # False after a print finished or was lost, until someone clears the bed.
    Column("bed_clear", Boolean, nullable=False, default=True),
    # Why an operator must look at the printer (a print it should not have started was
    # cancelled there); set with bed_clear False, cleared by the operator's bed_cleared.
    Column("attention", Text),
    Column("reserved_by", String(200)),
    Column("reserved_until", Float),
    # The Raft address of the node that can reach this printer (pinned), or None (floating:
    # the leader places it on any live node).
    Column("hub", String(300)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Which node drives each printer. `epoch` grows on every change of `node`; every command a
# printer's worker sends carries it, and apply refuses any other (mes/state/shards.py).
# `release` asks the driving node to hand the printer over (to `moving_to`, or to nobody):
# it stops its worker and commits shard.release, which makes the move.
assignments = Table(
    "assignments",
    metadata,
    Column("printer_id", String(64), primary_key=True),
    Column("node", String(300)),
    Column("epoch", Integer, nullable=False),
    Column("since", Float, nullable=False),
    Column("release", Boolean, nullable=False, default=False),
    Column("moving_to", String(300)),
    Index("ix_assignments_node", "node"),
)

# Farm-wide counters (name -> last value handed out): "assignment" numbers assignment epochs.
counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Integer, nullable=False),
)

# Each node's lease: renewed through Raft by the node itself (seq grows on each renewal);
# marked expired by the leader when no renewal came within NODE_LEASE_SECONDS.
node_leases = Table(
    "node_leases",
    metadata,
    Column("node", String(300), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("renewed_at", Float, nullable=False),
    Column("expired", Boolean, nullable=False, default=False),
    Column("expired_at", Float),
)

# What each printer reported last (overwritten, not appended), written by its driver's worker.
printer_status = Table(
    "printer_status",
    metadata,
    Column("printer_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("nozzle_actual", Float),
    Column("nozzle_target", Float),
    Column("bed_actual", Float),
    Column("bed_target", Float),
    Column("file_name", String(255)),
    Column("progress", Float),
    Column("time_printed", Float),
    Column("time_left", Float),
    Column("error", Text),
    Column("observed_at", Float, nullable=False),
)

files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the content
    Column("name", String(255), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_files_created", "created_at", "id"),
)

# Who uploaded each stored file (anyone who uploaded the same content counts): a user may
# print and download only files they uploaded or that a job of theirs prints (schema 3).
file_owners = Table(
    "file_owners",
    metadata,
    Column("file_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    # The name this owner gave the file at their latest upload (schema 5; null before level
    # 7, when only the first upload's name was kept in `files`).
    Column("name", String(255)),
)

# Each node's HTTP address, announced by the node itself, for copying blobs between nodes.
nodes = Table(
    "nodes",
    metadata,
    Column("raft_address", String(300), primary_key=True),
    Column("http_url", String(300), nullable=False),
    Column("updated_at", Float, nullable=False),
    # Where its embedded OPC UA server listens (opc.tcp://...); null without one (schema 4).
    Column("opcua_url", String(300)),
)

# One row: the epoch of the current leader; the leader's plans (shard.assign) carry it.
leadership = Table(
    "leadership",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("leader", String(300), nullable=False),
    Column("since", Float, nullable=False),
)

filaments = Table(
    "filaments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("type", String(8), nullable=False),
    Column("color", String(64), nullable=False),
    Column("total_weight_in_grams", Integer, nullable=False),
    Column("remaining_weight_in_grams", Integer, nullable=False),
    # Sum of print_weight_in_grams over this spool's Queued and Running jobs, kept by apply.
    Column("reserved_weight_in_grams", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

print_jobs = Table(
    "print_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    # The printer the submitter asked for (None: any printer with the job's spool loaded).
    Column("printer_id", String(64)),
    Column("filament_id", String(64)),
    Column("filepath", String(1024), nullable=False),
    Column("file_id", String(64)),
    Column("print_weight_in_grams", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    # Set by the scheduler's claim: the printer the job went to and its name there.
    Column("assigned_printer_id", String(64)),
    Column("printer_filename", String(255)),
    # None, "starting" (claimed, not yet seen printing), "printing" or "paused".
    Column("phase", String(16)),
    # The epoch and time of the claim: a later leader waits before sending it again.
    Column("claim_epoch", Integer),
    Column("claimed_at", Float),
    # "pause" or "resume" asked through the API, carried out by the worker.
    Column("requested_action", String(16)),
    Column("from_server", Boolean, nullable=False, default=True),
    Column("last_error", Text),
    # The user who submitted the job (None for jobs found on a printer) and its order.
    Column("owner_id", String(64)),
    Column("order_id", String(64)),
    # None (no approval needed), "pending", "approved" or "rejected".
    Column("approval", String(16)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The queue's order (schema 5): higher priority first, then by rank (null: the creation
    # time), then id. Operators set both (job.reorder, level 7).
    Column("priority", Integer, nullable=False, default=0, server_default=text("0")),
    Column("queue_rank", Float),
    # Lists in creation order, all jobs or one status; active jobs by status and phase.
    Index("ix_print_jobs_created", "created_at", "id"),
    Index("ix_print_jobs_status", "status", "created_at", "id"),
    Index("ix_print_jobs_status_phase", "status", "phase",
          sqlite_where=text("phase IS NOT NULL")),
    Index("ix_print_jobs_filament_status", "filament_id", "status"),
    Index("ix_print_jobs_printer_status", "printer_id", "status"),
    Index("ix_print_jobs_assigned_status", "assigned_printer_id", "status"),
    Index("ix_print_jobs_owner", "owner_id", "created_at", "id"),
    Index("ix_print_jobs_order", "order_id", "created_at", "id"),
    # Retention: finished jobs by the time they ended, and whether a file is still printed.
    Index("ix_print_jobs_finished", "status", "updated_at", "id"),
    Index("ix_print_jobs_file", "file_id", sqlite_where=text("file_id IS NOT NULL")),
)

# A job waits in the queue: queued, and not being sent to a printer.
QUEUE_WAITING = and_(print_jobs.c.status == "Queued", print_jobs.c.phase.is_(None))
# The queue's order: higher priority first, then rank (the creation time unless an operator
# moved the job), then id.
QUEUE_ORDER = (print_jobs.c.priority.desc(),
               func.coalesce(print_jobs.c.queue_rank, print_jobs.c.created_at),
               print_jobs.c.id)
# The scheduler's queues: what can start, in queue order, for one printer or one spool.
QUEUE_INDEXES = (
    Index("ix_print_jobs_queue_printer", print_jobs.c.printer_id, print_jobs.c.status,
          print_jobs.c.phase, *QUEUE_ORDER, sqlite_where=text("file_id IS NOT NULL")),
    Index("ix_print_jobs_queue_filament", print_jobs.c.filament_id, print_jobs.c.status,
          print_jobs.c.phase, print_jobs.c.printer_id, *QUEUE_ORDER,
          sqlite_where=text("file_id IS NOT NULL")),
    # Every waiting job in queue order (positions, the page's queue).
    Index("ix_print_jobs_queue", print_jobs.c.status, *QUEUE_ORDER),
)

job_history = Table(
    "job_history",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("print_jobs.id"), nullable=False, index=True),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("cause", Text, nullable=False, default=""),
    # The user whose command made the change (None: the farm itself, e.g. a worker).
    Column("actor", String(64)),
    # Utilisation reports: the jobs that ended within a window.
    Index("ix_job_history_end", "to_status", "at"),
)

# How long each printer spent in each state (printing, paused, idle, offline, error): one
# row per stretch, `ended_at` NULL for the open one; written by apply (mes.state.intervals).
printer_state_intervals = Table(
    "printer_state_intervals",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("printer_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    # At most one open stretch per printer; also the current state of every printer.
    Index("ix_printer_state_open", "printer_id", unique=True,
          sqlite_where=text("ended_at IS NULL")),
    # Windows: the closed stretches that end after a window's start (covering the report).
    Index("ix_printer_state_ended", "ended_at", "started_at", "printer_id", "state",
          sqlite_where=text("ended_at IS NOT NULL")),
)

# Results of commands that carried a request id, so that a retried command is answered
# with its first result instead of being applied twice.
applied_requests = Table(
    "applied_requests",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, unique=True),
    # SHA-256 of the command's op and arguments: a key reused for another request is refused.
    Column("fingerprint", String(64), nullable=True),
    Column("outcome", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320)),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    # argon2id hash made at the edge (apply never hashes: it must stay deterministic).
    Column("password_hash", String(256)),
    # The OpenID Connect subject this user was created for, if any.
    Column("oidc_subject", String(300), unique=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_users_name", "name", unique=True),
    Index("ix_users_role", "role", "disabled"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id"), nullable=False),
    Column("name", String(200), nullable=False),
    # SHA-256 (hex) of the token; the token itself is never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
    Index("ix_api_tokens_user", "user_id", "created_at", "id"),
)

# Who did what: every applied command that a user's request carried.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("op", String(64), nullable=False),
    Column("target", String(64)),
    # Retention deletes the oldest entries first.
    Index("ix_audit_log_at", "at", "seq"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Index("ix_orders_created", "created_at", "id"),
    Index("ix_orders_owner", "owner_id", "created_at", "id"),
)

# Webhook subscriptions (operators'): where to POST which notification types, signed with
# the secret (stored as given: every leader signs with it; shown to its creator once).
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("secret", String(200), nullable=False),
    # JSON list of notification types ("*": all) and of printer ids (empty: every printer).
    Column("types", Text, nullable=False),
    Column("printer_ids", Text, nullable=False),
    Column("description", String(500), nullable=False, default=""),
    Column("created_by", String(64)),
    Column("created_at", Float, nullable=False),
)

# One notification to send (a webhook POST or an e-mail), created inside apply when a
# matching change happens; the leader's delivery loop sends it and commits the result.
deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    # Stable across retries and leaders: the `webhook-id` header (msg_<index>_<n>).
    Column("id", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # webhook | email
    Column("webhook_id", String(64)),
    Column("target", String(2048), nullable=False),  # URL or e-mail address
    Column("type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | done | failed | skipped
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("last_attempt_at", Float),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("finished_at", Float),
    Index("ix_deliveries_due", "status", "next_at"),
    Index("ix_deliveries_webhook", "webhook_id", "seq"),
    Index("ix_deliveries_finished", "finished_at"),
)

# Printers last seen in a state that raised a notification (error, offline), so that one
# stretch in that state notifies once.
printer_alerts = Table(
    "printer_alerts",
    metadata,
    Column("printer_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
)

# Schema 2. The release and data level each node reported through Raft (node.version).
node_versions = Table(
    "node_versions",
    metadata,
    Column("node", String(300), primary_key=True),
    Column("release", String(64), nullable=False),
    Column("level", Integer, nullable=False),
    Column("reported_at", Float, nullable=False),
)

# Schema 2. One row: the data level every member supports, committed by the leader
# (cluster.version); formats above it are not submitted. No row: level 1 (release 0.1.0).
cluster_version = Table(
    "cluster_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("level", Integer, nullable=False),
    Column("since", Float, nullable=False),
)
