"""OPC UA methods of the farm: SubmitJob, Pause, Resume, Cancel, ClearBed per printer, and
ISA-95 Store, StoreAndStart, Start, Cancel, Pause, Resume on JobOrderControl.

Every call is committed through Raft as the session's user (`current_principal`), with the
REST API's rules: users act only on their own jobs, clearing a bed needs an operator,
anonymous sessions call nothing. Results are status codes: BadNotFound (no such printer,
job, spool or file), BadInvalidState (the rules refuse the transition, or the printer has
no current job), BadUserAccessDenied (the role may not, or another user's job on a
printer), BadInvalidArgument (bad values; a wrong type also BadTypeMismatch for that
argument in InputArgumentResults), BadMethodInvalid (a method called on another object
than its own). The JobOrderControl and JobOrderResults methods are the farm's and each
printer's (`MachineryBuildingBlocks/JobManagement`): called on a printer's, they act on
that printer's jobs only (a job order stored there is for that printer; another printer's
job answers as an unknown one). The ISA-95 methods on JobOrderControl answer with a
ReturnStatus bit map (OPC 10031-4, B.2): 1 on success, and a refused job order Uncertain
with its bits (2: unknown job order, 8: the job's state does not allow the command, 16:
not accepted, 2^32: an invalid request); by JobOrderID another user's job answers as an
unknown one, as REST's 404 does.
Handlers are async: sync ones run in a thread pool and lose the session's user.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from asyncua import Node, ua
from sqlalchemy import Connection

from mes.app import quotas
from mes.app.errors import DomainError, Kind
from mes.app.raft_index import noting_index
from mes.auth.principal import Principal
from mes.files.store import SHA256_PATTERN
from mes.opcua.job_management import printer_of_part
from mes.opcua.job_orders import JobOrderInvalid, job_args
from mes.opcua.job_responses import job_order_state, job_response, states_asked
from mes.opcua.security import current_principal
from mes.state import queries
from mes.state.args import ID_PATTERN, MAX_GRAMS
from mes.state.opcua_reads import histories_of, jobs_in_states
from mes.state.ops import Op

if TYPE_CHECKING:
    from mes.app.ports import Farm

log = logging.getLogger(__name__)
T = TypeVar("T")

Submit = Callable[[str, dict[str, Any], Principal], Awaitable[Any]]
Read = Callable[[Callable[[Connection], T]], Awaitable[T]]
ISA95_URI = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
JOB_ORDER_DATA_TYPE = 3008  # ISA95JobOrderDataType in the ISA-95 Job Control namespace
# The filepath of a job submitted without a FileId (a record only, never sent to a printer).
RECORD_ONLY_PATH = "(no file: submitted over OPC UA)"
# ISA-95 Job Control ReturnStatus (OPC 10031-4, B.2), a bit map: bit 0 (value 1) is "no
# error". A refused job order answers Uncertain with the bits saying why (a Bad status
# carries no output arguments); a caller who may not call at all, a malformed argument and
# an outcome not known (a timeout) still answer Bad.
RETURN_OK = 1
UNKNOWN_JOB_ORDER = 1 << 1
INVALID_JOB_ORDER_STATUS = 1 << 3  # the job's state does not allow the command
UNABLE_TO_ACCEPT = 1 << 4
INVALID_REQUEST = 1 << 32
RETURN_BITS = {ua.StatusCodes.BadNotFound: UNKNOWN_JOB_ORDER,
               ua.StatusCodes.BadInvalidState: INVALID_JOB_ORDER_STATUS,
               ua.StatusCodes.BadTooManyOperations: UNABLE_TO_ACCEPT,
               ua.StatusCodes.BadInvalidArgument: INVALID_REQUEST}
# Store and StoreAndStart: what is not found is the order's material, printer or file (an
# invalid request); what the rules refuse (an id in use, too heavy) is not accepted.
STORE_BITS = {**RETURN_BITS, ua.StatusCodes.BadNotFound: INVALID_REQUEST,
              ua.StatusCodes.BadInvalidState: UNABLE_TO_ACCEPT}
# Who may call each method at all (its UserExecutable for a session): a role at least.
Executable = Callable[[ua.NodeId, str], None]
# The printer whose JobManagement a JobOrderControl or JobOrderResults method was called
# on, while its handler runs (None: the farm's).
_CALLED_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mes_opcua_called_for", default=None)

# The OPC UA status of each kind of the application layer's DomainError (one table).
STATUS_OF_KIND: dict[Kind, int] = {
    "invalid": ua.StatusCodes.BadInvalidArgument, "not_found": ua.StatusCodes.BadNotFound,
    "rule": ua.StatusCodes.BadInvalidState, "forbidden": ua.StatusCodes.BadUserAccessDenied,
    "quota": ua.StatusCodes.BadTooManyOperations, "unavailable": ua.StatusCodes.BadTimeout}


class Refused(Exception):
    """A call answered with a Bad status code; `argument`: the index of the input argument
    at fault, answered in InputArgumentResults with `argument_code`."""

    def __init__(self, code: int, message: str, argument: int | None = None,
                 argument_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.argument = argument
        self.argument_code = argument_code if argument_code is not None else code

    def result(self, inputs: int) -> ua.CallMethodResult:
        """The Call's answer: the status, and each argument's when one is at fault."""
        answer = ua.CallMethodResult(StatusCode=ua.StatusCode(self.code))
        if self.argument is not None:
            answer.InputArgumentResults = [
                ua.StatusCode(self.argument_code if i == self.argument else ua.StatusCodes.Good)
                for i in range(inputs)]
        return answer


@dataclass(frozen=True)
class Arg:
    """One input or output argument: name, type and what it means."""

    name: str
    vtype: ua.VariantType
    description: str
    array: bool = False
    # A structure's DataType (vtype ExtensionObject); None: the built-in type of `vtype`.
    data_type: ua.NodeId | None = None

    def argument(self) -> ua.Argument:
        """The Argument structure clients read from InputArguments/OutputArguments."""
        data_type = self.data_type or ua.NodeId(self.vtype.value)
        return ua.Argument(Name=self.name, DataType=data_type,
                           ValueRank=1 if self.array else -1,
                           ArrayDimensions=[0] if self.array else [],
                           Description=ua.LocalizedText(self.description))


Handler = Callable[[Principal, list[Any]], Awaitable[list[ua.Variant]]]

_JOB_ID_OUT = Arg("JobId", ua.VariantType.String, "the job the call acted on")
_RETURN_STATUS = Arg("ReturnStatus", ua.VariantType.UInt64,
                     "OPC 10031-4 B.2 bits: 1 done; a refused job order (Uncertain) 2 unknown "
                     "job order, 8 its state does not allow it, 16 not accepted, 2^32 invalid")
_JOB_ORDER_ARGS = (Arg("JobOrderID", ua.VariantType.String, "the print job's id"),
                   Arg("Comment", ua.VariantType.LocalizedText,
                       "why the method was called (may be empty)", array=True))
_SUBMIT_ARGS = (
    Arg("FilamentId", ua.VariantType.String, "the spool to print with"),
    Arg("PrintWeightInGrams", ua.VariantType.UInt32, f"whole grams, 1 to {MAX_GRAMS}"),
    Arg("FileId", ua.VariantType.String, "SHA-256 of a stored G-code file; empty: the job is "
        "a record only and is never sent to a printer"),
    Arg("PrinterId", ua.VariantType.String, "the printer to use; empty: any printer with "
        "the spool loaded"),
    Arg("JobId", ua.VariantType.String, "the new job's id; empty: the server chooses one"),
)


def _values(args: Sequence[Arg], variants: Sequence[Any]) -> list[Any]:
    if len(variants) < len(args):
        raise Refused(ua.StatusCodes.BadArgumentsMissing, "arguments missing")
    if len(variants) > len(args):
        raise Refused(ua.StatusCodes.BadTooManyArguments, "too many arguments")
    values = []
    for index, (spec, variant) in enumerate(zip(args, variants, strict=True)):
        value = variant.Value if isinstance(variant, ua.Variant) else variant
        if spec.array:
            ok = value is None or isinstance(value, list)
        elif spec.vtype == ua.VariantType.ExtensionObject:
            ok = value is not None and not isinstance(value, (str, bytes, int, float))
        elif spec.vtype == ua.VariantType.String:
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise Refused(ua.StatusCodes.BadInvalidArgument, f"{spec.name}: wrong type",
                          index, ua.StatusCodes.BadTypeMismatch)
        values.append(value)
    return values


def _ident(value: str, name: str, optional: bool = False) -> str | None:
    if optional and value == "":
        return None
    if not ID_PATTERN.match(value):
        raise Refused(ua.StatusCodes.BadInvalidArgument, f"{name}: not an id")
    return value


def _child_id(parent: Node, name: str, ns: int) -> ua.NodeId:
    """A stable string NodeId for a method under `parent`: "<parent's id>/<name>"."""
    ident = parent.nodeid.Identifier
    base = ident if isinstance(ident, str) else f"{parent.nodeid.NamespaceIndex}-{ident}"
    return ua.NodeId(f"{base}/{name}", ns)


class FarmMethods:
    """Builds the farm's methods and answers their calls."""

    def __init__(self, submit: Submit, read: Read[Any],
                 require_approval: Callable[[], bool] = lambda: False,
                 executable: Executable | None = None) -> None:
        self.submit = submit
        self.read = read
        self.require_approval = require_approval
        self.executable = executable

    @classmethod
    def for_node(cls, node: Farm,
                 shown: Callable[[int], Awaitable[object]] | None = None,
                 executable: Executable | None = None) -> FarmMethods:
        """Methods that commit through `node` (any node: the command goes to the leader).

        `shown(index)` waits until the address space shows the write at that Raft index: a
        client that browses right after a call finds what the call made (a new job's node).
        """
        async def submit(op: str, args: dict[str, Any], who: Principal) -> Any:
            with noting_index() as noted:
                quota = quotas.jobs_quota(node.settings.quotas) if op == Op.JOB_CREATE else None
                value = await node.commands.submit(op, args, who, quota=quota)
            if shown is not None and noted.index:
                await shown(noted.index)
            return value

        return cls(submit, node.read, lambda: node.settings.require_approval, executable)

    async def _method(self, parent: Node, ns: int, name: str, handler: Handler,
                      inputs: Sequence[Arg], outputs: Sequence[Arg], description: str,
                      browse_ns: int | None = None, role: str = "user",
                      return_bits: dict[int, int] | None = None,
                      part: str | None = None) -> Node:
        """Add method `name` to `parent`. Only `parent` may be called with it (another
        object: Bad_MethodInvalid); `role` is the least role that may call it;
        `return_bits`: an ISA-95 method, whose refusals answer Uncertain and a ReturnStatus
        with these bits per status where the specification says so; `part`: a
        JobManagement part whose printers' copies may be called with it too."""
        method: Node = await parent.add_method(
            _child_id(parent, name, ns),
            ua.QualifiedName(name, ns if browse_ns is None else browse_ns),
            self._callback(parent.nodeid, name, handler, inputs, return_bits, part=part),
            [a.argument() for a in inputs], [a.argument() for a in outputs])
        await method.write_attribute(ua.AttributeIds.Description,
                                     ua.DataValue(ua.LocalizedText(description)))
        if self.executable is not None:
            self.executable(method.nodeid, role)
        return method

    def _callback(self, owner: ua.NodeId, name: str, handler: Handler, inputs: Sequence[Arg],
                  return_bits: dict[int, int] | None,
                  before_bits: Sequence[ua.Variant] = (),
                  part: str | None = None) -> Callable[..., Awaitable[Any]]:
        """What answers a call of method `name` of object `owner` (see `_method`);
        `before_bits`: the outputs a refusal answers before its ReturnStatus (empty values
        of the method's other outputs); `part`: also called on each printer's JobManagement
        `part` (the handler reads the printer from `_called_for()`)."""
        async def call(object_id: ua.NodeId, *variants: Any) -> Any:
            printer = None
            if object_id != owner:
                printer = (printer_of_part(object_id, part, owner.NamespaceIndex)
                           if part is not None else None)
                if printer is None:
                    return ua.StatusCode(ua.StatusCodes.BadMethodInvalid)
            called_for = _CALLED_FOR.set(printer)
            try:
                return await answer(variants)
            finally:
                _CALLED_FOR.reset(called_for)

        async def answer(variants: Sequence[Any]) -> Any:
            try:
                who = current_principal()
                values = _values(inputs, variants)
                if who is None:
                    raise Refused(ua.StatusCodes.BadUserAccessDenied, "sign in to call methods")
                return await handler(who, values)
            except Refused as refused:
                log.info("OPC UA %s refused: %s", name, refused)
                return _refusal(refused, len(variants), return_bits, before_bits)
            except DomainError as error:
                log.info("OPC UA %s refused: %s %s", name, error.code, error.message)
                return _refusal(Refused(STATUS_OF_KIND[error.kind], error.message),
                                len(variants), return_bits, before_bits)
            except Exception:
                log.exception("OPC UA method %s failed", name)
                return ua.StatusCode(ua.StatusCodes.BadInternalError)

        return call

    async def add_farm_methods(self, farm_folder: Node, ns: int) -> None:
        """SubmitJob on the farm's folder (Objects/PrintFarm)."""
        await self._method(farm_folder, ns, "SubmitJob", self._submit_job, _SUBMIT_ARGS,
                           [Arg("JobId", ua.VariantType.String, "the queued job's id")],
                           "Queue a print job in the caller's name")

    async def add_printer_methods(self, printer: Node, printer_id: str, ns: int) -> None:
        """Pause, Resume and Cancel (the printer's current job) and ClearBed on a printer."""

        def on_job(action: str) -> Handler:
            async def handler(who: Principal, _values: list[Any]) -> list[ua.Variant]:
                job = await self._current_job(printer_id)
                return await self._job_action(who, job, action)
            return handler

        for name, description in (("Pause", "Pause the job printing on this printer"),
                                  ("Resume", "Resume the paused job on this printer"),
                                  ("Cancel", "Cancel the job printing on this printer")):
            await self._method(printer, ns, name, on_job(name.lower()), (), [_JOB_ID_OUT],
                               description)

        async def clear_bed(who: Principal, _values: list[Any]) -> list[ua.Variant]:
            if not who.staff:
                raise Refused(ua.StatusCodes.BadUserAccessDenied, "clearing a bed needs an "
                              "operator")
            await self.submit(Op.PRINTER_BED_CLEARED, {"id": printer_id}, who)
            return []

        await self._method(printer, ns, "ClearBed", clear_bed, (), (),
                           "The finished print was taken off the bed (operators)",
                           role="operator")

    async def add_job_order_control(self, job_order_control: Node, ns: int) -> None:
        """ISA-95 job control on Machinery Jobs' JobOrderControl.

        Store queues a job that may not start until Start (an operator's approval);
        StoreAndStart queues a job the scheduler may start (a user's still waits for
        approval when REQUIRE_APPROVAL is on); Start approves a stored job; Cancel, Pause
        and Resume act on a job by id. Job orders are read by `mes.opcua.job_orders`.
        """
        browse_ns = await _namespace_index(job_order_control, ISA95_URI, ns)
        order_arg = Arg("JobOrder", ua.VariantType.ExtensionObject,
                        "the job order: JobOrderID, MaterialRequirements[0] (MaterialLotID: "
                        "the spool, Quantity: grams), optional EquipmentRequirements[0].ID "
                        "(the printer) and WorkMasterID[0].ID (the G-code file's SHA-256)",
                        data_type=ua.NodeId(JOB_ORDER_DATA_TYPE, browse_ns))

        def store(held: bool) -> Handler:
            async def handler(who: Principal, values: list[Any]) -> list[ua.Variant]:
                try:
                    args = job_args(values[0])
                except JobOrderInvalid as exc:
                    raise Refused(ua.StatusCodes.BadInvalidArgument, str(exc), 0) from None
                printer = _CALLED_FOR.get()
                if printer is not None:  # a printer's JobOrderControl: a job order for it
                    named = args.get("printer_id")
                    if named not in (None, printer):
                        raise Refused(ua.StatusCodes.BadInvalidArgument,
                                      f"the job order names printer {named!r}, not this "
                                      f"JobOrderControl's printer {printer!r}", 0)
                    args["printer_id"] = printer
                await self._create_job(who, args, held=held)
                return [ua.Variant(RETURN_OK, ua.VariantType.UInt64)]
            return handler

        for name, held, description in (
                ("Store", True, "Queue a print job that waits for Start (an operator's "
                                "approval)"),
                ("StoreAndStart", False, "Queue a print job the farm may start")):
            await self._method(job_order_control, ns, name, store(held),
                               (order_arg, _JOB_ORDER_ARGS[1]), [_RETURN_STATUS], description,
                               browse_ns, return_bits=STORE_BITS, part=_CONTROL)

        def by_id(action: str) -> Handler:
            async def handler(who: Principal, values: list[Any]) -> list[ua.Variant]:
                job_id = _ident(values[0], "JobOrderID")
                assert job_id is not None
                job = await self.read(lambda c: queries.get_job(c, job_id))
                if job is None or (not who.staff and job["owner_id"] != who.user_id) or \
                        not _of_called_printer(job):
                    # Another user's job answers as a missing one (as REST's 404): the
                    # answer tells nobody which job ids exist.
                    raise Refused(ua.StatusCodes.BadNotFound, f"no job {job_id!r}")
                await self._job_action(who, job, action)
                return [ua.Variant(RETURN_OK, ua.VariantType.UInt64)]
            return handler

        for name in ("Cancel", "Pause", "Resume"):
            await self._method(job_order_control, ns, name, by_id(name.lower()),
                               _JOB_ORDER_ARGS, [_RETURN_STATUS], f"{name} a print job",
                               browse_ns, return_bits=RETURN_BITS, part=_CONTROL)

        async def start(who: Principal, values: list[Any]) -> list[ua.Variant]:
            job_id = _ident(values[0], "JobOrderID")
            if not who.staff:
                raise Refused(ua.StatusCodes.BadUserAccessDenied, "starting a stored job "
                              "needs an operator")
            if _CALLED_FOR.get() is not None:
                job = await self.read(lambda c: queries.get_job(c, job_id or ""))
                if job is None or not _of_called_printer(job):
                    raise Refused(ua.StatusCodes.BadNotFound, f"no job {job_id!r}")
            await self.submit(Op.JOB_APPROVE, {"id": job_id}, who)
            return [ua.Variant(RETURN_OK, ua.VariantType.UInt64)]

        await self._method(job_order_control, ns, "Start", start, _JOB_ORDER_ARGS,
                           [_RETURN_STATUS], "Allow a stored print job to start (operators)",
                           browse_ns, role="operator", return_bits=RETURN_BITS, part=_CONTROL)

    async def add_job_order_results(self, results: Node, ns: int) -> None:
        """JobOrderResults' mandatory RequestJobResponseByJobOrderID and
        RequestJobResponseByJobOrderState (the model made the nodes; this answers them):
        the job responses of mes.opcua.job_responses, a user's own jobs only (another's
        answers as an unknown job order, as REST's 404 does)."""
        isa95 = await _namespace_index(results, ISA95_URI, ns)

        async def by_id(who: Principal, values: list[Any]) -> list[ua.Variant]:
            job_id = _ident(values[0], "JobOrderID")
            found = await self.read(lambda c: _job_with_history(c, job_id or ""))
            if found is None or (not who.staff and found[0]["owner_id"] != who.user_id) or \
                    not _of_called_printer(found[0]):
                raise Refused(ua.StatusCodes.BadNotFound, f"no job {job_id!r}")
            job, history, printer_state = found
            response = job_response(job, history, printer_state)
            return [ua.Variant(response, ua.VariantType.ExtensionObject),
                    ua.Variant(RETURN_OK, ua.VariantType.UInt64)]

        async def by_state(who: Principal, values: list[Any]) -> list[ua.Variant]:
            asked = states_asked(values[0])
            owner = None if who.staff else who.user_id
            printer = _CALLED_FOR.get()
            found = await self.read(lambda c: _jobs_with_histories(c, asked, owner, printer))
            responses = [job_response(job, history, state) for job, history, state in found]
            return [ua.Variant(responses, ua.VariantType.ExtensionObject, is_array=True),
                    ua.Variant(RETURN_OK, ua.VariantType.UInt64)]

        no_response = ua.Variant(ua.ISA95JobResponseDataType(), ua.VariantType.ExtensionObject)
        no_responses = ua.Variant([], ua.VariantType.ExtensionObject, is_array=True)
        for name, handler, arg, empty in (
                ("RequestJobResponseByJobOrderID", by_id,
                 Arg("JobOrderID", ua.VariantType.String, "the job's id"), no_response),
                ("RequestJobResponseByJobOrderState", by_state,
                 Arg("JobOrderState", ua.VariantType.ExtensionObject, "the states asked for",
                     array=True), no_responses)):
            method = await results.get_child(f"{isa95}:{name}")
            method.session.add_method_callback(method.nodeid, self._callback(
                results.nodeid, name, handler, (arg,), RETURN_BITS, (empty,), part=_RESULTS))
            if self.executable is not None:
                self.executable(method.nodeid, "user")

    async def _submit_job(self, who: Principal, values: list[Any]) -> list[ua.Variant]:
        filament, grams, file_id, printer, job_id = values
        args: dict[str, Any] = {"filament_id": _ident(filament, "FilamentId")}
        if not 1 <= grams <= MAX_GRAMS:
            raise Refused(ua.StatusCodes.BadInvalidArgument, "PrintWeightInGrams out of range")
        args["print_weight_in_grams"] = grams
        if file_id:
            if not SHA256_PATTERN.match(file_id):
                raise Refused(ua.StatusCodes.BadInvalidArgument, "FileId: not a SHA-256")
            args["file_id"] = file_id
        if printer_id := _ident(printer, "PrinterId", optional=True):
            args["printer_id"] = printer_id
        args["id"] = _ident(job_id, "JobId", optional=True) or uuid.uuid4().hex[:16]
        job = await self._create_job(who, args, held=False)
        return [ua.Variant(job["id"], ua.VariantType.String)]

    async def _create_job(self, who: Principal, args: dict[str, Any],
                          held: bool) -> dict[str, Any]:
        """Queue a job in the caller's name; `held`: it waits for approval whoever asks."""
        args = {"owner_id": who.user_id, **args}
        if "file_id" not in args:
            args.setdefault("filepath", RECORD_ONLY_PATH)
        if held or (self.require_approval() and not who.staff):
            args["needs_approval"] = True
        job: dict[str, Any] = await self.submit(Op.JOB_CREATE, args, who)
        return job

    async def _current_job(self, printer_id: str) -> dict[str, Any]:
        def query(conn: Connection) -> tuple[bool, dict[str, Any] | None]:
            exists = queries.get_printer(conn, printer_id) is not None
            return exists, queries.active_job_on(conn, printer_id) if exists else None

        found: tuple[bool, dict[str, Any] | None] = await self.read(query)
        exists, job = found
        if not exists:
            raise Refused(ua.StatusCodes.BadNotFound, f"no printer {printer_id!r}")
        if job is None:
            raise Refused(ua.StatusCodes.BadInvalidState, f"printer {printer_id!r} has no job")
        return job

    async def _job_action(self, who: Principal, job: dict[str, Any],
                          action: str) -> list[ua.Variant]:
        if not who.staff and job["owner_id"] != who.user_id:
            raise Refused(ua.StatusCodes.BadUserAccessDenied, "another user's job")
        if action == "cancel":
            await self.submit(Op.JOB_SET_STATUS, {"id": job["id"], "status": "Canceled"}, who)
        else:
            await self.submit(Op.JOB_REQUEST, {"id": job["id"], "action": action}, who)
        return [ua.Variant(job["id"], ua.VariantType.String)]


_CONTROL, _RESULTS = "JobOrderControl", "JobOrderResults"
# At most this many job responses per RequestJobResponseByJobOrderState (the newest).
RESPONSES_PER_CALL = 1_000
# Pages of that many jobs a call reads at most to find them (the state filter is partly
# in Python): a call never reads more than 10,000 jobs.
SCANNED_PAGES = 10
_STATUSES_OF = {"NotAllowedToStart": ("Queued",), "AllowedToStart": ("Queued",),
                "Running": ("Running",), "Interrupted": ("Running",), "Ended": ("Done",),
                "Aborted": ("Canceled",)}


def _job_with_history(conn: Connection, job_id: str
                      ) -> tuple[dict[str, Any], list[dict[str, Any]], str | None] | None:
    job = queries.get_job(conn, job_id)
    if job is None:
        return None
    return job, histories_of(conn, [job_id])[job_id], _printer_state(conn, job)


def _printer_state(conn: Connection, job: dict[str, Any]) -> str | None:
    printer = job.get("assigned_printer_id")
    if not printer or job.get("status") != "Running":
        return None
    status = queries.printer_statuses(conn, [printer]).get(printer)
    return str(status["state"]) if status else None


def _of_called_printer(job: dict[str, Any]) -> bool:
    """Whether `job` is one the called JobManagement answers for: any job on the farm's,
    a printer's (assigned, or asked for while queued) on that printer's."""
    printer = _CALLED_FOR.get()
    return printer is None or printer == (job.get("assigned_printer_id")
                                          or job.get("printer_id"))


def _jobs_with_histories(conn: Connection, asked: set[str], owner_id: str | None,
                         printer_id: str | None = None
                         ) -> list[tuple[dict[str, Any], list[dict[str, Any]], str | None]]:
    """The newest jobs in the ISA-95 states asked for (of one printer when given), with
    their histories."""
    statuses = {status for name in asked for status in _STATUSES_OF[name]}
    if not statuses:
        return []
    queued = {"NotAllowedToStart", "AllowedToStart"} & asked
    pending = None if len(queued) != 1 else "NotAllowedToStart" in queued
    found: list[tuple[dict[str, Any], list[dict[str, Any]], str | None]] = []
    # Page by page: a job's ISA-95 state also depends on its printer's (Running or
    # Interrupted), so the SQL filter on status may return jobs the states asked exclude.
    for page in range(SCANNED_PAGES):
        jobs = jobs_in_states(conn, statuses, pending if statuses == {"Queued"} else None,
                              owner_id, RESPONSES_PER_CALL, printer_id,
                              offset=page * RESPONSES_PER_CALL)
        states = [(job, _printer_state(conn, job)) for job in jobs]
        wanted = [(job, state) for job, state in states if job_order_state(job, state) in asked]
        wanted = wanted[:RESPONSES_PER_CALL - len(found)]
        histories = histories_of(conn, [job["id"] for job, _ in wanted])
        found += [(job, histories[job["id"]], state) for job, state in wanted]
        if len(found) >= RESPONSES_PER_CALL or len(jobs) < RESPONSES_PER_CALL:
            break
    return found


def _refusal(refused: Refused, inputs: int, return_bits: dict[int, int] | None,
             before_bits: Sequence[ua.Variant] = ()) -> ua.CallMethodResult:
    """How a refused call answers: Bad with each argument's status, or, for an ISA-95
    method refused for its job order (not its caller, an argument's type, or a timeout),
    Uncertain with the ReturnStatus bits (OPC 10031-4, B.2)."""
    bits = return_bits.get(refused.code) if return_bits is not None else None
    if bits is None or refused.argument_code == ua.StatusCodes.BadTypeMismatch:
        return refused.result(inputs)
    return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.Uncertain),
                               OutputArguments=[*before_bits,
                                                ua.Variant(bits, ua.VariantType.UInt64)])


async def _namespace_index(node: Node, uri: str, default: int) -> int:
    array = await Node(node.session, ua.NodeId(ua.ObjectIds.Server_NamespaceArray)).read_value()
    return array.index(uri) if uri in array else default
