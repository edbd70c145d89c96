"""`/api/v1/print_jobs`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.schemas import (
    ERROR_RESPONSES,
    JobHistoryOut,
    JobStatus,
    PrintJobCreate,
    PrintJobOut,
    TargetStatus,
)
from mes.state import queries

router = APIRouter(prefix="/print_jobs", tags=["print jobs"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[PrintJobOut])
async def list_jobs(node: NodeDep, status: Annotated[JobStatus | None, Query()] = None) -> Any:
    """All print jobs, optionally only those with a status (any letter case)."""
    return read(node, lambda c: queries.list_jobs(c, status))


@router.post("", status_code=201, response_model=PrintJobOut)
async def create_job(body: PrintJobCreate, node: NodeDep,
                     idempotency_key: IdempotencyKey = None) -> Any:
    """Queue a print job on a printer with a spool; status is always Queued at first."""
    args = body.model_dump(exclude_none=True)
    args.setdefault("id", new_id())
    return await commit(node, "job.create", args, idempotency_key)


@router.get("/{job_id}", response_model=PrintJobOut)
async def get_job(job_id: str, node: NodeDep) -> Any:
    """One print job."""
    return found(read(node, lambda c: queries.get_job(c, job_id)), "print_job", job_id)


@router.post("/{job_id}/status", response_model=PrintJobOut)
async def set_status(job_id: str, node: NodeDep, status: Annotated[TargetStatus, Query()],
                     idempotency_key: IdempotencyKey = None) -> Any:
    """Move a job to running (from queued), done (from running) or canceled."""
    return await commit(node, "job.set_status", {"id": job_id, "status": status},
                        idempotency_key)


@router.get("/{job_id}/history", response_model=list[JobHistoryOut])
async def job_history(job_id: str, node: NodeDep) -> Any:
    """Every status change of a job, oldest first."""
    found(read(node, lambda c: queries.get_job(c, job_id)), "print_job", job_id)
    return read(node, lambda c: queries.job_history_of(c, job_id))
