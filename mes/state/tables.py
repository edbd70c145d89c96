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
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
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
    Column("printer_id", String(64), nullable=False),
    Column("filament_id", String(64), nullable=False),
    Column("filepath", String(1024), nullable=False),
    Column("print_weight_in_grams", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_print_jobs_status", "status"),
    Index("ix_print_jobs_filament_status", "filament_id", "status"),
    Index("ix_print_jobs_printer_status", "printer_id", "status"),
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
)

# Results of commands that carried a request id, so that a retried command is answered
# with its first result instead of being applied twice.
applied_requests = Table(
    "applied_requests",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("outcome", Text, nullable=False),
)
