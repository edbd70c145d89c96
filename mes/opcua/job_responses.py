"""Our print jobs as ISA-95 job responses (ISA95JobResponseDataType) and job order states
(ISA95StateDataType), for JobOrderResults' RequestJobResponseBy... methods.

A job's state on the ISA-95 job order state machine (OPC 10031-4, its StateNumbers):
waiting for approval NotAllowedToStart (1), queued AllowedToStart (2), printing Running (3),
paused Interrupted (4), done Ended (5), canceled or lost Aborted (6). A response names the
printer (EquipmentActuals), the spool and its grams (MaterialActuals: consumed when Ended,
reserved before), and the print's start and end times. Pure functions over rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from mes.opcua.job_orders import GRAM_UNIT_ID

JOB_ORDER_STATES = {"NotAllowedToStart": 1, "AllowedToStart": 2, "Running": 3,
                    "Interrupted": 4, "Ended": 5, "Aborted": 6}
_GRAM = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                         UnitId=GRAM_UNIT_ID, DisplayName=ua.LocalizedText("g"),
                         Description=ua.LocalizedText("gram"))


def job_order_state(job: dict[str, Any], printer_state: str | None = None) -> str:
    """The ISA-95 job order state of a job (`printer_state`: its printer's, when printing)."""
    status = job.get("status")
    if status == "Done":
        return "Ended"
    if status == "Canceled":
        return "Aborted"
    if status == "Running":
        return "Interrupted" if printer_state == "paused" else "Running"
    if job.get("approval") == "pending":
        return "NotAllowedToStart"
    return "AllowedToStart"


def state_data(name: str) -> ua.ISA95StateDataType:
    """An ISA95StateDataType naming one state of the job order state machine."""
    return ua.ISA95StateDataType(
        BrowsePath=ua.RelativePath(Elements=[ua.RelativePathElement(
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasComponent), IsInverse=False,
            IncludeSubtypes=True, TargetName=ua.QualifiedName(name, 0))]),
        StateText=ua.LocalizedText(name), StateNumber=JOB_ORDER_STATES[name])


def states_asked(states: Any) -> set[str]:
    """The state names an ISA95StateDataType[] argument asks for (by StateNumber, else by
    StateText); unknown ones are left out."""
    by_number = {number: name for name, number in JOB_ORDER_STATES.items()}
    asked: set[str] = set()
    for state in states or []:
        number = getattr(state, "StateNumber", None)
        text = getattr(getattr(state, "StateText", None), "Text", None)
        if number in by_number:
            asked.add(by_number[number])
        elif text in JOB_ORDER_STATES:
            asked.add(str(text))
    return asked


def job_response(job: dict[str, Any], history: list[dict[str, Any]],
                 printer_state: str | None = None) -> ua.ISA95JobResponseDataType:
    """The job response of `job` with its status `history` (oldest first)."""
    state = job_order_state(job, printer_state)
    started = next((h["at"] for h in history if h["to_status"] == "Running"), None)
    ended = next((h["at"] for h in reversed(history)
                  if h["to_status"] in ("Done", "Canceled")), None)
    printer = job.get("assigned_printer_id") or job.get("printer_id")
    response = ua.ISA95JobResponseDataType(
        JobResponseID=str(job["id"]), JobOrderID=str(job["id"]),
        Description=ua.LocalizedText(f"print job {job['id']}: {job['status']}"),
        JobState=[state_data(state)],
        JobResponseData=[ua.ISA95ParameterDataType(
            ID="Status", Value=ua.Variant(str(job["status"]), ua.VariantType.String))])
    if started is not None:
        response.StartTime = _time(started)
    if ended is not None and state in ("Ended", "Aborted"):
        response.EndTime = _time(ended)
    if printer:
        response.EquipmentActuals = [ua.ISA95EquipmentDataType(
            ID=str(printer), EquipmentUse="printer")]
    if job.get("filament_id"):
        response.MaterialActuals = [ua.ISA95MaterialDataType(
            MaterialLotID=str(job["filament_id"]),
            MaterialUse="Consumed" if state == "Ended" else "Reserved",
            Quantity=str(job["print_weight_in_grams"]), EngineeringUnits=_GRAM)]
    return response


def job_order(job: dict[str, Any]) -> ua.ISA95JobOrderDataType:
    """A print job as the job order that asks for it: its id, spool and grams, and the
    printer it asked for (never its owner or file)."""
    order = ua.ISA95JobOrderDataType(JobOrderID=str(job["id"]))
    if job.get("filament_id"):
        order.MaterialRequirements = [ua.ISA95MaterialDataType(
            MaterialLotID=str(job["filament_id"]),
            Quantity=str(job.get("print_weight_in_grams") or ""))]
    if job.get("printer_id"):
        order.EquipmentRequirements = [ua.ISA95EquipmentDataType(ID=str(job["printer_id"]))]
    return order


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(float(at), UTC)
