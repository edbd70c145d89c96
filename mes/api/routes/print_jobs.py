"""`/api/v1/print_jobs`."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from mes.api.auth import Caller, Operator, authenticated_router
from mes.api.deps import IdempotencyKey, NodeDep, commit, found, new_id, read
from mes.api.errors import ApiError
from mes.api.gcode_files import estimated_seconds, file_metadata, weight_warning
from mes.api.holds import with_hold, with_holds
from mes.api.jobs_csv import jobs_csv
from mes.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, paged
from mes.api.schemas import (
    JobHistoryOut,
    JobStatus,
    PrintJobCreate,
    PrintJobOut,
    QueuedJobOut,
    QueuePlaceIn,
    RejectIn,
    TargetStatus,
    Text200,
    Timestamp,
    WarningsOut,
)
from mes.api.uploads import store_upload
from mes.app import quotas
from mes.app.ports import Farm
from mes.auth.principal import Principal
from mes.state import listing, queries, queue_view
from mes.state.ops import Op

router = authenticated_router("/print_jobs", "print jobs")


def job_filter(
    who: Caller,
    status: Annotated[JobStatus | None, Query(description="any letter case")] = None,
    printer_id: Annotated[str | None, Query(
        max_length=64, description="asked for or sent to this printer")] = None,
    filament_id: Annotated[str | None, Query(max_length=64)] = None,
    created_after: Annotated[Timestamp | None, Query(
        description="created at or after (ISO 8601 or Unix seconds)")] = None,
    created_before: Annotated[Timestamp | None, Query(
        description="created before (ISO 8601 or Unix seconds)")] = None,
    owner_id: Annotated[str | None, Query(
        max_length=64, description="submitted by this user (operators and admins)")] = None,
    order_id: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[Text200 | None, Query(
        description="a piece of the job's id, file name, printer or owner (id or name), "
        "in any letter case")] = None,
) -> listing.JobFilter:
    """The jobs a list shows; a `user` sees only their own whatever `owner_id` says."""
    if not who.staff:
        owner_id = who.user_id
    return listing.JobFilter(status, printer_id, filament_id, _epoch(created_after),
                             _epoch(created_before), owner_id, order_id, q or None)


JobFilterDep = Annotated[listing.JobFilter, Depends(job_filter)]


@router.get("", response_model=list[PrintJobOut])
async def list_jobs(
    request: Request, response: Response, node: NodeDep, where: JobFilterDep,
    order: Annotated[Literal["oldest", "newest"], Query(
        description="oldest first (creation order, the default) or newest first; a cursor "
        "goes on in the order it was made in")] = "oldest",
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Any:
    """Print jobs in creation order (or the newest first), filtered, one page at a time.
    Users see only their own jobs; operators and admins see all. The next page is in the
    `Link` (rel=next) and `X-Next-Cursor` headers; the last page has neither.
    """
    after = decode_cursor(cursor, float, str)
    rows = await read(node, lambda c: listing.jobs_page(c, where, after, limit + 1,
                                                        newest_first=order == "newest"))
    page = paged(request, response, rows, limit, lambda r: [r["created_at"], r["id"]])
    return await with_holds(node, page)


@router.get("/export", response_class=Response, responses={200: {
    "content": {"text/csv": {}},
    "description": "one row per job; times in UTC (ISO 8601), the duration in seconds"}})
async def export_jobs(node: NodeDep, where: JobFilterDep) -> Response:
    """Every job the filters match (at most 100,000, the newest first) as a CSV file: file,
    status, outcome and why, owner, printer, spool, grams, when it was created, started and
    ended, and how long it took. Users export only their own jobs."""
    return Response(await jobs_csv(node, where), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="print-jobs.csv"'})


@router.get("/queue", response_model=list[QueuedJobOut])
async def queue(request: Request, response: Response, node: NodeDep, who: Caller,
                limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """The waiting jobs in the order the scheduler takes them (priority, then age or where
    an operator placed them), each with its position in the whole queue and, for the first
    jobs, when it should start. Users see only their own jobs, at their place among all."""
    after = decode_cursor(cursor, int, float, str)
    owner = None if who.staff else who.user_id
    rows = await read(node, lambda c: queue_view.queue_page(
        c, owner, after, limit + 1))
    page = paged(request, response, rows, limit, lambda r: list(queue_view.cursor_key(r)))
    await _with_estimates(node, page)
    return await with_holds(node, page)


async def _with_estimates(node: NodeDep, page: list[dict[str, Any]]) -> None:
    """Set `estimated_start` on the jobs of `page` within the queue's head."""
    for row in page:
        row["estimated_start"] = None
    if not page or page[0]["position"] > queue_view.ESTIMATE_DEPTH:
        return
    now = time.time()
    head, free = await read(node, lambda c: (queue_view.queue_head(c),
                                             queue_view.printers_free_at(c, now)))
    seconds = await estimated_seconds(node, {j["file_id"] for j in head if j["file_id"]})
    durations = {j["id"]: seconds.get(j["file_id"]) for j in head if j["file_id"]}
    starts = queue_view.estimated_starts(head, free, durations)
    for row in page:
        row["estimated_start"] = starts.get(row["id"])


@router.post("/{job_id}/queue", response_model=PrintJobOut)
async def place_in_queue(job_id: str, body: QueuePlaceIn, node: NodeDep, who: Operator,
                         idempotency_key: IdempotencyKey = None) -> Any:
    """Move a waiting job in the queue (operators and admins): give it a `priority` (-100
    to 100, higher first; it then waits among that priority's jobs by age: just before the
    first of them created after it), or place it just `before` or just `after` another
    waiting job (it takes that job's priority)."""
    args: dict[str, Any] = {"id": job_id, **body.model_dump(exclude_none=True)}
    return await with_hold(node, await commit(node, Op.JOB_REORDER, args, idempotency_key,
                                              who))


def _epoch(moment: datetime | None) -> float | None:
    """A time bound in stored seconds (naive means UTC).

    Answers show times to the microsecond, rounded: moving both bounds one microsecond
    earlier makes `created_after` a job's shown `created_at` include that job, and
    `created_before` it exclude it, while adjacent windows still neither overlap nor gap.
    """
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() - 1e-6


JOB_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PrintJobCreate.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file", "filament_id"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "id": {"type": "string"}, "printer_id": {"type": "string"},
                    "filament_id": {"type": "string"},
                    "print_weight_in_grams": {"type": "integer"},
                }}},
        },
    }
}


class PrintJobCreated(PrintJobOut, WarningsOut):
    """The queued job, and what in the request looked wrong."""


@router.post("", status_code=201, response_model=PrintJobCreated, openapi_extra=JOB_BODY_DOC)
async def create_job(request: Request, node: NodeDep, who: Caller,
                     idempotency_key: IdempotencyKey = None) -> Any:
    """Queue a print job in the caller's name; status is always Queued at first.

    JSON names a stored `file_id` (or only a `filepath`, kept as a record); a multipart
    request carries the G-code `file` and the job's fields at once. With REQUIRE_APPROVAL
    a user's job waits (hold `awaiting_approval`) until an operator approves it.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        fields: dict[str, Any] = {k: v for k, v in form.items() if k != "file"}
        if "print_weight_in_grams" in fields:
            with contextlib.suppress(ValueError):
                fields["print_weight_in_grams"] = int(str(fields["print_weight_in_grams"]))
        body = _validated(fields)
        stored = await store_upload(node, form.get("file"), who)
        args = body.model_dump(exclude_none=True)
        args["file_id"] = stored["id"]
        args.setdefault("filepath", stored["name"])
    else:
        try:
            data = await request.json()
        except ValueError:
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        args = _validated(data).model_dump(exclude_none=True)
    warnings = await _weighed(node, args)
    args.setdefault("id", new_id(idempotency_key, who))
    args["owner_id"] = who.user_id
    if needs_approval(node, who):
        args["needs_approval"] = True
    job = await with_hold(node, await commit(node, Op.JOB_CREATE, args, idempotency_key, who,
                                            quotas.jobs_quota(node.settings.quotas)))
    return {**job, "warnings": warnings}


async def _weighed(node: NodeDep, args: dict[str, Any]) -> list[str]:
    """Fill in a missing weight from the file's slicer metadata (rounded up); a given one
    far from it is kept, with a warning. 422 when neither says the weight."""
    file_id = args.get("file_id")
    meta = await file_metadata(node, file_id) if file_id else None
    given = args.get("print_weight_in_grams")
    if given is None:
        stated = meta.weight_grams if meta is not None else None
        if stated is None:
            raise ApiError(422, "invalid_input", "print_weight_in_grams is required: "
                           + ("the file does not say how much filament it uses" if file_id
                              else "a job without a file cannot know its weight"),
                           "print_weight_in_grams")
        args["print_weight_in_grams"] = stated
        return []
    warning = weight_warning(int(given), meta)
    return [warning] if warning else []


def needs_approval(node: Farm, who: Principal) -> bool:
    """Whether a job `who` submits waits for an operator (REQUIRE_APPROVAL, users only)."""
    return node.settings.require_approval and not who.staff


def _validated(data: Any) -> PrintJobCreate:
    try:
        return PrintJobCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


@router.get("/{job_id}", response_model=PrintJobOut)
async def get_job(job_id: str, node: NodeDep, who: Caller) -> Any:
    """One print job (users: only their own)."""
    return await with_hold(node, await visible_job(node, job_id, who))


async def visible_job(node: Farm, job_id: str, who: Principal) -> dict[str, Any]:
    """The job, or a 404 when it does not exist or belongs to another user (for users)."""
    job = await read(node, lambda c: queries.get_job(c, job_id))
    if job is not None and not who.staff and job["owner_id"] != who.user_id:
        job = None
    return found(job, "print_job", job_id)


async def _owned(node: Farm, job_id: str, who: Principal) -> None:
    """For a user, a 404 unless the job is theirs (staff: apply checks the id itself)."""
    if not who.staff:
        await visible_job(node, job_id, who)


@router.post("/{job_id}/status", response_model=PrintJobOut)
async def set_status(job_id: str, node: NodeDep, who: Caller,
                     status: Annotated[TargetStatus, Query()],
                     idempotency_key: IdempotencyKey = None) -> Any:
    """Move a job to running (from queued), done (from running) or canceled.

    Users may only cancel their own jobs; operators and admins move any job.
    """
    await _owned(node, job_id, who)
    if not who.staff and status != "Canceled":
        raise ApiError(403, "forbidden", "users may only cancel their jobs (status=Canceled)",
                       "status")
    return await with_hold(node, await commit(
        node, Op.JOB_SET_STATUS, {"id": job_id, "status": status}, idempotency_key, who))


@router.post("/{job_id}/pause", response_model=PrintJobOut)
async def pause(job_id: str, node: NodeDep, who: Caller,
                     idempotency_key: IdempotencyKey = None) -> Any:
    """Ask the printer to pause this running job (carried out within one worker tick)."""
    await _owned(node, job_id, who)
    return await with_hold(node, await commit(
        node, Op.JOB_REQUEST, {"id": job_id, "action": "pause"}, idempotency_key, who))


@router.post("/{job_id}/resume", response_model=PrintJobOut)
async def resume(job_id: str, node: NodeDep, who: Caller,
                      idempotency_key: IdempotencyKey = None) -> Any:
    """Ask the printer to resume this paused job (carried out within one worker tick)."""
    await _owned(node, job_id, who)
    return await with_hold(node, await commit(
        node, Op.JOB_REQUEST, {"id": job_id, "action": "resume"}, idempotency_key, who))


@router.get("/{job_id}/history", response_model=list[JobHistoryOut])
async def job_history(job_id: str, request: Request, response: Response, node: NodeDep,
                      who: Caller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """The status changes of a job, oldest first, with who made each, one page at a time."""
    after = decode_cursor(cursor, int)
    await visible_job(node, job_id, who)
    rows = await read(node, lambda c: listing.history_page(
        c, job_id, after[0] if after else None, limit + 1))
    return paged(request, response, rows, limit, lambda r: [r["seq"]])


@router.post("/{job_id}/approve", response_model=PrintJobOut)
async def approve(job_id: str, node: NodeDep, who: Operator,
                  idempotency_key: IdempotencyKey = None) -> Any:
    """Let a job that waits for approval be printed (operators and admins)."""
    return await with_hold(node, await commit(node, Op.JOB_APPROVE, {"id": job_id},
                                              idempotency_key, who))


@router.post("/{job_id}/reject", response_model=PrintJobOut)
async def reject(job_id: str, body: RejectIn, node: NodeDep, who: Operator,
                 idempotency_key: IdempotencyKey = None) -> Any:
    """Refuse a job that waits for approval: it is canceled with the reason."""
    return await with_hold(node, await commit(
        node, Op.JOB_REJECT, {"id": job_id, "reason": body.reason}, idempotency_key, who))
