"""Request and response bodies of the REST API (apart from the tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    computed_field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mes.state.args import ID_PATTERN, MAX_GRAMS, OPCUA_NAME_PATTERN
from mes.state.filaments import FILAMENT_TYPES
from mes.state.jobs import JOB_STATUSES
from mes.state.printers import PRINTER_APIS
from mes.state.shards import NODE_ADDRESS
from mes.state.urls import MAX_URL_LENGTH, url_problem


def _canonical(options: tuple[str, ...]) -> BeforeValidator:
    """Accept an option in any letter case (and in quotes, as the Raft3D brief writes them)."""

    def pick(value: Any) -> Any:
        if isinstance(value, str):
            bare = value.strip().strip("\"'")
            for option in options:
                if option.lower() == bare.lower():
                    return option
        return value

    return BeforeValidator(pick)


def _id_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _from_epoch(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


EntityId = Annotated[str, BeforeValidator(_id_text), Field(pattern=ID_PATTERN.pattern)]
PrinterApi = Annotated[Literal["OctoPrint", "PrusaLink", "Moonraker", "Duet", "Mock"],
                      _canonical(PRINTER_APIS)]
FilamentType = Annotated[Literal["PLA", "PETG", "ABS", "TPU"], _canonical(FILAMENT_TYPES)]
JobStatus = Annotated[Literal["Queued", "Running", "Done", "Canceled"], _canonical(JOB_STATUSES)]
TargetStatus = Annotated[Literal["Running", "Done", "Canceled"],
                         _canonical(("Running", "Done", "Canceled"))]
def _printer_url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_url", problem)
    return value


Url = Annotated[str, Field(max_length=MAX_URL_LENGTH, description=(
    "http(s)://host[:port][/path]: no user info, query or fragment"),
    examples=["http://192.168.1.20"]), AfterValidator(_printer_url)]
Text200 = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f]*$")]
Grams = Annotated[StrictInt, Field(ge=1, le=MAX_GRAMS, description=(
    "whole grams, an integer (12.5 is refused with 422)"), examples=[15])]
Timestamp = Annotated[datetime, BeforeValidator(_from_epoch)]
OpcuaName = Annotated[str, Field(pattern=OPCUA_NAME_PATTERN.pattern)]
NodeAddress = Annotated[str, Field(max_length=300, pattern=NODE_ADDRESS.pattern)]




class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrinterFields(_Input):
    """Printer fields that can be set and changed."""

    company: Text200 | None = None
    model: Text200 | None = None
    url: Url | None = None
    api: PrinterApi | None = None
    api_key: Annotated[str, Field(max_length=256, pattern=r"^[^\x00-\x1f]*$")] | None = Field(
        None, description="write-only: never shown (see `has_api_key`); a new `url` clears "
        "it unless the same request sets one")
    opcua_name: OpcuaName | None = None
    worker: StrictBool | None = Field(None, description=(
        "whether this server drives the printer (polls it, sends it jobs). Defaults to true "
        "for a printer created with a `url` and an `api` (or `api: Mock`); false keeps the "
        "printer a record only"))
    group: Text200 | None = None
    camera_url: Url | None = None
    filament_id: EntityId | None = Field(None, description="the spool loaded in the printer",
                                         examples=["pla-black"])
    hub: NodeAddress | None = Field(None, description=(
        "pins the printer to one node: the Raft address (host:port) of the node that can "
        "reach it, one of the cluster's nodes; null (the default) lets the leader place it "
        "on any live node"), examples=["10.0.0.5:7000"])


class PrinterCreate(PrinterFields):
    """A new printer; `id` is chosen by the server when omitted."""

    id: EntityId | None = None


class PrinterUpdate(PrinterFields):
    """Fields to change; absent fields stay as they are."""


class PrinterOut(BaseModel):
    """A printer as the API shows it: never its API key."""

    id: str
    company: str
    model: str
    url: str | None
    api: str | None
    has_api_key: bool
    opcua_name: str | None
    worker: bool
    group: str | None
    camera_url: str | None
    filament_id: str | None
    bed_clear: bool
    attention: str | None = None
    reserved_by: str | None
    reserved_until: Timestamp | None
    hub: str | None = None
    driven_by: str | None = Field(None, description=(
        "the Raft address of the node driving the printer now (null: no node drives it)"))
    drive_state: str = Field("unassigned", description=(
        "driven, releasing (being handed to another node), unassigned (waits for the "
        "leader to place it), unreachable (its hub has no live lease: no other node may "
        "drive it) or not_driven (`worker: false`)"))
    drive_epoch: int | None = Field(None, description=(
        "the assignment epoch the driving node's commands carry"))
    driven_since: Timestamp | None = Field(None, description=(
        "when the printer was assigned to the node driving it"))
    created_at: Timestamp
    updated_at: Timestamp


class PrinterStatusOut(BaseModel):
    """The printer's latest normalised status as its driving node's worker last committed it."""

    printer_id: str
    state: str
    nozzle_actual: float | None = None
    nozzle_target: float | None = None
    bed_actual: float | None = None
    bed_target: float | None = None
    file_name: str | None = None
    progress: float | None = None
    time_printed: float | None = None
    time_left: float | None = None
    error: str | None = None
    observed_at: Timestamp | None = Field(None, description=(
        "when the status shown was observed (committed on change, and every 30 s unchanged)"))
    last_seen_at: Timestamp | None = Field(None, description=(
        "when the printer last answered: exact on the node that drives it, else within 30 s"))
    age_seconds: float | None = Field(None, description="seconds since `last_seen_at`")
    bed_clear: bool
    attention: str | None = None
    reserved_by: str | None
    reserved_until: Timestamp | None


class ReservationIn(_Input):
    """Who reserves the printer, and for how long."""

    holder: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$")]
    duration_seconds: Annotated[StrictInt, Field(ge=1, le=30 * 24 * 3600)]


class FileOut(BaseModel):
    """A stored G-code file."""

    id: str = Field(description="SHA-256 of the content")
    name: str
    size: int
    created_at: Timestamp


class FilamentCreate(_Input):
    """A new spool; remaining weight defaults to the total."""

    id: EntityId | None = None
    type: FilamentType
    color: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]*$")]
    total_weight_in_grams: Grams
    remaining_weight_in_grams: Annotated[StrictInt, Field(ge=0, le=MAX_GRAMS)] | None = None


class FilamentUpdate(_Input):
    """Spool fields to change."""

    type: FilamentType | None = None
    color: Annotated[str, Field(min_length=1, max_length=64,
                                pattern=r"^[^\x00-\x1f]*$")] | None = None
    total_weight_in_grams: Grams | None = None
    remaining_weight_in_grams: Annotated[StrictInt, Field(ge=0, le=MAX_GRAMS)] | None = None


class FilamentOut(BaseModel):
    """A spool with the weight its queued and running jobs reserve."""

    id: str
    type: str
    color: str
    total_weight_in_grams: int
    remaining_weight_in_grams: int
    reserved_weight_in_grams: int
    created_at: Timestamp
    updated_at: Timestamp


class PrintJobCreate(_Input):
    """A new print job; it starts Queued and its status cannot be given."""

    id: EntityId | None = None
    printer_id: EntityId | None = Field(None, description="omit to print on any printer with "
                                        "the job's spool loaded", examples=["mk4-1"])
    filament_id: EntityId = Field(description="the spool to print with", examples=["pla-black"])
    filepath: Annotated[str, Field(min_length=1, max_length=1024,
                                   pattern=r"^[^\x00-\x1f]*$")] | None = None
    file_id: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        None, description="a file stored with POST /api/v1/files; without one the job is a "
        "record only and is never sent to a printer")
    print_weight_in_grams: Grams | None = Field(
        None, description="the filament the print uses, in whole grams, an integer (12.5 is "
        "refused with 422); may be omitted when the file's slicer wrote it (the file's "
        "figure, rounded up)")


class WarningsOut(BaseModel):
    """What was accepted but looks wrong."""

    warnings: list[str] = Field(default_factory=list, description=(
        "what was accepted but looks wrong, in words (for example a weight far from the "
        "one the file's slicer wrote)"))


class HoldOut(BaseModel):
    """Why a job waits. Codes: record_only, starting, paused, printer_not_found,
    printer_not_driven, printer_unreachable, printer_needs_attention, printer_reserved,
    printer_offline, printer_refuses_key, printer_error, printer_busy, bed_not_cleared,
    printer_not_seen, no_printer_for_spool, no_driven_printer, no_printer_ready,
    last_start_failed."""

    code: str
    message: str


class JobEndOut(BaseModel):
    """Why a job ended, in words."""

    kind: Literal["done", "rejected", "canceled", "lost"] = Field(description=(
        "done: printed; rejected: an operator refused it; canceled: a user or the farm "
        "canceled it; lost: the farm lost the print (a printer error, restart or fault)"))
    message: str = Field(description="in words, with the operator's reason or what happened")
    by: str | None = Field(None, description="the user who ended it (null: the farm)")
    at: Timestamp | None = Field(None, description="when it ended (null: its history was "
                                 "pruned)")
    started_at: Timestamp | None = Field(None, description=(
        "when it first started printing (null: it never did, or its history was pruned)"))


class PrintJobOut(BaseModel):
    """A print job."""

    id: str
    printer_id: str | None
    filament_id: str | None
    filepath: str
    file_id: str | None
    print_weight_in_grams: int
    status: str
    assigned_printer_id: str | None
    printer_filename: str | None
    phase: str | None
    claimed_at: Timestamp | None = None
    requested_action: str | None
    from_server: bool
    last_error: str | None
    owner_id: str | None = Field(None, description="the user who submitted it")
    order_id: str | None = None
    approval: Literal["pending", "approved", "rejected"] | None = Field(None, description=(
        "null when no approval is needed (REQUIRE_APPROVAL off, or submitted by staff)"))
    created_at: Timestamp
    updated_at: Timestamp
    priority: int = Field(0, description=(
        "the queue's order: higher first (-100 to 100, default 0), then by age unless an "
        "operator moved the job"))

    hold: HoldOut | None = Field(None, description=(
        "why the job waits (queued and not sent, or paused), as a code and a sentence; null "
        "when it prints or goes to the next ready printer"))
    ended: JobEndOut | None = Field(None, description=(
        "why the job ended (Done or Canceled); null while it has not"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hold_reason(self) -> str | None:
        """The hold's sentence alone (kept for clients of earlier versions)."""
        return self.hold.message if self.hold else None


class JobHistoryOut(BaseModel):
    """One status change of a job."""

    job_id: str
    from_status: str | None
    to_status: str
    at: Timestamp
    cause: str
    actor: str | None = Field(None, description="the user whose request made the change; "
                              "null when the farm made it (a printer worker)")


class RejectIn(_Input):
    """Why a job is refused (shown in its history)."""

    reason: Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f]*$")]


class QueuedJobOut(PrintJobOut):
    """A waiting job with its place in the queue."""

    position: int = Field(description="its place in the whole queue (1: the next to go)")
    estimated_start: Timestamp | None = Field(None, description=(
        "when it should start, from the printers' time left and the files' estimated times, "
        "assuming beds are cleared as prints end; null where not known"))


class QueuePlaceIn(_Input):
    """Where a waiting job goes in the queue: exactly one of a priority (it then waits
    among that priority's jobs by age: just before the first of them created after it), or
    just before or just after another waiting job (taking its priority)."""

    priority: StrictInt | None = Field(None, ge=-100, le=100)
    before: EntityId | None = None
    after: EntityId | None = None

    @model_validator(mode="after")
    def _one_place(self) -> QueuePlaceIn:
        given = [name for name in ("priority", "before", "after")
                 if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of priority, before or after")
        return self


GroupName = Annotated[Text200, Field(
    min_length=1, pattern=r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$")]


class GroupOut(BaseModel):
    """A printer group: the name its printers carry, and how many do."""

    group: str
    printers: int


class GroupRename(_Input):
    """A group's new name; null takes its printers out of any group."""

    group: GroupName
    to: GroupName | None


class GroupRenamed(BaseModel):
    """What a rename did: the printers that moved."""

    group: str
    to: str | None
    printers: list[str]


class ErrorDetail(BaseModel):
    """What went wrong, and where."""

    code: str
    message: str
    field: str | None


class ErrorOut(BaseModel):
    """Every error answer has this shape."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 422, 503)
}
