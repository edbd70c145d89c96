"""The embedded OPC UA server of a real node, as an integrator meets it: Basic256Sha256
SignAndEncrypt with the farm's accounts; browse, subscribe, events and methods, checked
against the REST API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, Node, ua

from mes.node import FarmNode
from tests.farm_helpers import eventually, running_farm, upload_as
from tests.opcua_farm import Farm, opcua_farm
from tests.opcua_secured import PASSWORD, POLICIES, call, client_certificate
from tests.ports import free_port

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
MACHINERY_JOBS_URI = "http://opcfoundation.org/UA/Machinery/Jobs/"
ISA95_URI = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
MT_URI = "http://opcfoundation.org/UA/MachineTool/"
CLIENT_URI = "urn:mes-tests:opcua-client"


@dataclass
class Secured:
    """The farm and a client certificate the server accepts."""

    farm: Farm
    cert: Path
    key: Path

    @property
    def node(self) -> FarmNode:
        return self.farm.node

    @property
    def api(self) -> httpx.AsyncClient:
        return self.farm.api

    @property
    def url(self) -> str:
        return self.farm.url


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Secured]:
    cert, key = await client_certificate(tmp_path / "client", CLIENT_URI)
    # Beds are cleared by hand here: ClearBed is one of the methods under test.
    async with opcua_farm(tmp_path, {"ada": "user", "otto": "operator"}, printer=True,
                          auto_clear_bed=False, mock_printer_job_time=30) as farm:
        yield Secured(farm, cert, key)


@pytest.fixture
async def session(farm: Secured) -> AsyncIterator[Client]:
    """Ada (role user) over Basic256Sha256 SignAndEncrypt."""
    async with connected(farm, "ada") as client:
        yield client


def connected(farm: Secured, user: str | None, password: str = PASSWORD) -> Client:
    client = Client(farm.url, timeout=30, watchdog_intervall=10)
    client.application_uri = CLIENT_URI
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    return client


async def secure(client: Client, farm: Secured) -> Client:
    await client.set_security(POLICIES["Basic256Sha256"], str(farm.cert), str(farm.key),
                              mode=ua.MessageSecurityMode.SignAndEncrypt)
    return client


@pytest.fixture
async def ada(farm: Secured) -> AsyncIterator[Client]:
    client = await secure(connected(farm, "ada"), farm)
    async with client:
        yield client


@pytest.fixture
async def otto(farm: Secured) -> AsyncIterator[Client]:
    client = await secure(connected(farm, "otto"), farm)
    async with client:
        yield client


def text(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


async def submit_12g(farm: Secured, file_id: str, *jobs: tuple[str, dict[str, Any]]) -> None:
    """Submit 12 g PLA jobs of `file_id` over REST as the admin: (job id, extra fields)."""
    for job_id, needs in jobs:
        body = {"id": job_id, "filament_id": "pla", "file_id": file_id,
                "print_weight_in_grams": 12, **needs}
        response = await farm.api.post("/api/v1/print_jobs", json=body)
        assert response.status_code == 201, response.text


async def test_a_user_submits_watches_it_print_and_an_operator_clears_the_bed(
        farm: Secured, ada: Client, otto: Client) -> None:
    names = await ada.get_namespace_array()
    ns, machinery = names.index(FARM_URI), names.index(MACHINERY_URI)
    by_machines = await ada.nodes.objects.get_child([f"{machinery}:Machines", f"{ns}:Printer1"])
    by_farm = await ada.nodes.objects.get_child(
        [f"{ns}:PrintFarm", f"{ns}:Printers", f"{ns}:Printer1"])
    assert by_machines.nodeid == by_farm.nodeid
    progress_node = await by_farm.get_child([f"{ns}:CurrentJob", f"{ns}:Progress"])

    progress: list[float] = []
    events: list[Any] = []

    class Handler:
        def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
            progress.append(value)

        def event_notification(self, event: Any) -> None:
            events.append(event)

    subscription = await ada.create_subscription(50, Handler())
    await subscription.subscribe_data_change(progress_node)
    await subscription.subscribe_events(ada.nodes.server, [ada.get_node(ua.NodeId(1002, ns))])

    stored = await upload_as(farm.api, "ada")
    farm_folder = await ada.nodes.objects.get_child(f"{ns}:PrintFarm")
    submitted = await call(farm_folder, ns, "SubmitJob", text("pla"),
                           ua.Variant(10, ua.VariantType.UInt32), text(stored["id"]),
                           text("m1"), text("ada-1"))
    assert submitted.StatusCode.is_good(), submitted.StatusCode
    assert submitted.OutputArguments[0].Value == "ada-1"
    job = (await farm.api.get("/api/v1/print_jobs/ada-1")).json()
    assert job["owner_id"] == "ada"

    status = await ada.nodes.objects.get_child(
        [f"{ns}:PrintFarm", f"{ns}:Jobs", f"{ns}:ada-1", f"{ns}:Status"])

    async def done() -> bool:
        return bool(await status.read_value() == "Done")

    await eventually(done, 60, "the job to be Done in the address space")
    assert (await farm.api.get("/api/v1/print_jobs/ada-1")).json()["status"] == "Done"
    await eventually(lambda: _async(bool(events)), 10, "the PrintCompleted event")
    assert events[0].JobId == "ada-1" and events[0].BedAwaitsClearing is True
    assert any(0 < p < 100 for p in progress) and 100.0 in progress, progress
    # The part on the bed is ada-1's: CurrentJob and ActiveProgram (MachineTool) say so.
    mt = names.index(MT_URI)
    program = [f"{mt}:Production", f"{mt}:ActiveProgram"]
    program_state = await by_farm.get_child([*program, f"{mt}:State", "0:CurrentState"])
    job_id = await by_farm.get_child([f"{ns}:CurrentJob", f"{ns}:JobId"])

    async def shown(node: Node, want: Any, what: str) -> None:
        async def check() -> bool:
            return bool(await node.read_value() == want)
        await eventually(check, 30, what)

    await shown(program_state, ua.LocalizedText("Ended"), "ActiveProgram to be Ended")
    assert await (await program_state.get_child("0:Number")).read_value() == 2
    assert await (await program_state.get_child("0:Id")).read_value() == ua.NodeId(5038, mt)
    assert await (await by_farm.get_child([*program, f"{mt}:Name"])).read_value() == \
        "mes-ada-1.gcode"
    assert await job_id.read_value() == "ada-1"

    # The bed awaits clearing: a user may not clear it, an operator may.
    refused = await call(by_farm, ns, "ClearBed")
    assert refused.StatusCode.value == ua.StatusCodes.BadUserAccessDenied
    assert (await farm.api.get("/api/v1/printers/m1")).json()["bed_clear"] is False
    otto_printer = otto.get_node(by_farm.nodeid)
    cleared = await call(otto_printer, ns, "ClearBed")
    assert cleared.StatusCode.is_good(), cleared.StatusCode
    assert (await farm.api.get("/api/v1/printers/m1")).json()["bed_clear"] is True
    await shown(program_state, None, "ActiveProgram to be empty once the bed is clear")
    assert await job_id.read_value() == ""

    # A second job, cancelled over OPC UA by its owner through the printer's Cancel.
    second = await call(farm_folder, ns, "SubmitJob", text("pla"),
                        ua.Variant(10, ua.VariantType.UInt32), text(stored["id"]),
                        text("m1"), text("ada-2"))
    assert second.StatusCode.is_good(), second.StatusCode

    async def running() -> bool:
        job = (await farm.api.get("/api/v1/print_jobs/ada-2")).json()
        return bool(job["status"] == "Running")

    await eventually(running, 30, "the second job to run")
    await shown(program_state, ua.LocalizedText("Running"), "ActiveProgram to be Running")
    cancelled = await call(by_farm, ns, "Cancel")
    assert cancelled.StatusCode.is_good(), cancelled.StatusCode
    assert (await farm.api.get("/api/v1/print_jobs/ada-2")).json()["status"] == "Canceled"
    # The canceled part waits on the bed: it is ada-2, not the older ada-1 at 100 %.
    await shown(program_state, ua.LocalizedText("Aborted"), "ActiveProgram to be Aborted")
    assert await job_id.read_value() == "ada-2"
    assert await (await program_state.get_child("0:Number")).read_value() == 4
    assert await progress_node.read_value() != 100.0
    await subscription.delete()


async def test_what_a_method_made_is_there_when_it_answers(farm: Secured, ada: Client) -> None:
    """SubmitJob answers once the address space shows the new job: a client that browses
    right after the call finds it (the mirror's passes run apart from the method)."""
    ns = (await ada.get_namespace_array()).index(FARM_URI)
    farm_folder = await ada.nodes.objects.get_child(f"{ns}:PrintFarm")
    stored = await upload_as(farm.api, "ada")
    for i in range(12):
        submitted = await call(farm_folder, ns, "SubmitJob", text("pla"),
                               ua.Variant(5, ua.VariantType.UInt32), text(stored["id"]),
                               text(""), text(f"quick-{i}"))
        assert submitted.StatusCode.is_good(), submitted.StatusCode
        status = await ada.nodes.objects.get_child(
            [f"{ns}:PrintFarm", f"{ns}:Jobs", f"{ns}:quick-{i}", f"{ns}:Status"])
        assert await status.read_value() in ("Queued", "Assigned", "Running")
    mirror = farm.node.opcua.mirror if farm.node.opcua is not None else None
    assert mirror is not None and mirror.shown_index >= 12


async def test_build_info_names_the_release(ada: Client) -> None:
    from mes.version import DATA_LEVEL, RELEASE

    build = ada.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_BuildInfo))
    info = await build.read_value()
    assert info.SoftwareVersion == RELEASE
    assert info.BuildNumber == f"level {DATA_LEVEL}"
    assert info.ProductUri == "urn:mes:print-farm" and info.ManufacturerName == "mes"
    version = ada.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_BuildInfo_SoftwareVersion))
    assert await version.read_value() == RELEASE


async def _async(value: bool) -> bool:
    return value


async def test_refused_wrong_password_anonymous_and_writes(farm: Secured, ada: Client) -> None:
    with pytest.raises(ua.UaStatusCodeError):
        async with await secure(connected(farm, "ada", "wrong password"), farm):
            pass
    with pytest.raises(ua.UaError):
        async with await secure(connected(farm, None), farm):
            pass
    with pytest.raises(ua.UaError):  # no security None endpoint by default
        async with connected(farm, "ada"):
            pass
    names = await ada.get_namespace_array()
    ns = names.index(FARM_URI)
    state = await ada.nodes.objects.get_child(
        [f"{ns}:PrintFarm", f"{ns}:Printers", f"{ns}:Printer1", f"{ns}:State"])
    with pytest.raises(ua.UaStatusCodeError):
        await state.write_value(ua.DataValue(ua.Variant("error", ua.VariantType.String)))
    assert (await farm.api.get("/api/v1/printers/m1/status")).json()["state"] != "error"


async def test_anonymous_when_allowed_reads_but_never_writes(tmp_path: Path) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/mes/"
    async with running_farm(tmp_path, opcua_enabled=True, opcua_endpoint=url,
                            opcua_allow_anonymous=True) as (node, api):
        async def ready() -> bool:
            return node.opcua is not None and node.opcua.ready.is_set()

        await eventually(ready, 60, "the OPC UA farm to be built")
        async with Client(url, timeout=30) as anonymous:
            names = await anonymous.get_namespace_array()
            ns = names.index(FARM_URI)
            farm_folder = await anonymous.nodes.objects.get_child(f"{ns}:PrintFarm")
            build = await farm_folder.get_child(f"{ns}:AddressSpaceBuildSeconds")
            assert await build.read_value() >= 0
            with pytest.raises(ua.UaStatusCodeError):
                await build.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
            refused = await call(farm_folder, ns, "SubmitJob", text("pla"),
                                 ua.Variant(1, ua.VariantType.UInt32), text(""), text(""),
                                 text("anon-1"))
            assert refused.StatusCode.value == ua.StatusCodes.BadUserAccessDenied
        assert (await api.get("/api/v1/print_jobs/anon-1")).status_code == 404


def _order(**fields: Any) -> ua.Variant:
    """An ISA95JobOrderDataType (its class is registered when the server loads the model)."""
    return ua.Variant(ua.ISA95JobOrderDataType(**fields))


async def test_isa95_store_waits_for_start_and_store_and_start_queues(
        farm: Secured, ada: Client, otto: Client) -> None:
    names = await ada.get_namespace_array()
    ns = names.index(FARM_URI)
    path = [f"{ns}:PrintFarm", f"{names.index(MACHINERY_JOBS_URI)}:JobManagement",
            f"{names.index(MACHINERY_JOBS_URI)}:JobOrderControl"]
    isa95 = names.index(ISA95_URI)
    control = await ada.nodes.objects.get_child(path)
    store = await control.get_child(f"{isa95}:Store")
    inputs = await (await store.get_child("0:InputArguments")).read_value()
    assert [a.Name for a in inputs] == ["JobOrder", "Comment"]
    assert inputs[0].DataType == ua.NodeId(3008, isa95)  # ISA95JobOrderDataType
    comment = ua.Variant([], ua.VariantType.LocalizedText)

    async def ask(client: Client, name: str, *args: ua.Variant) -> ua.CallMethodResult:
        node = await client.nodes.objects.get_child(path)
        return await call(node, isa95, name, *args)

    material = ua.ISA95MaterialDataType(MaterialLotID="pla", Quantity="12.5")
    stored = await ask(ada, "Store", _order(
        JobOrderID="iso-1", MaterialRequirements=[material],
        EquipmentRequirements=[ua.ISA95EquipmentDataType(ID="m1")]), comment)
    assert stored.StatusCode.is_good(), stored.StatusCode
    assert stored.OutputArguments[0].Value == 1  # ReturnStatus bit 0: no error
    job = (await farm.api.get("/api/v1/print_jobs/iso-1")).json()
    assert (job["owner_id"], job["approval"], job["print_weight_in_grams"], job["printer_id"],
            job["status"]) == ("ada", "pending", 13, "m1", "Queued")
    # Start is an operator's release of a stored job.
    refused = await ask(ada, "Start", ua.Variant("iso-1"), comment)
    assert refused.StatusCode.name == "BadUserAccessDenied"
    started = await ask(otto, "Start", ua.Variant("iso-1"), comment)
    assert started.StatusCode.is_good(), started.StatusCode
    assert (await farm.api.get("/api/v1/print_jobs/iso-1")).json()["approval"] == "approved"

    parameters = [ua.ISA95ParameterDataType(ID="FilamentId", Value=ua.Variant("pla")),
                  ua.ISA95ParameterDataType(ID="PrintWeightInGrams", Value=ua.Variant(7))]
    queued = await ask(ada, "StoreAndStart", _order(
        JobOrderID="iso-2", JobOrderParameters=parameters), comment)
    assert queued.StatusCode.is_good(), queued.StatusCode
    job = (await farm.api.get("/api/v1/print_jobs/iso-2")).json()
    assert (job["owner_id"], job["approval"], job["print_weight_in_grams"]) == ("ada", None, 7)

    async def status(*fields: tuple[str, Any]) -> tuple[str, int]:
        """A refused job order: Uncertain, and the ReturnStatus bits (OPC 10031-4 B.2)."""
        result = await ask(ada, "StoreAndStart", _order(**dict(fields)), comment)
        return result.StatusCode.name, int(result.OutputArguments[0].Value)

    lot = ("MaterialRequirements", [material])
    invalid, refused = ("Uncertain", 1 << 32), ("Uncertain", 16)
    assert await status(("JobOrderID", "iso-3")) == invalid  # no spool
    assert await status(("JobOrderID", "bad id!"), lot) == invalid
    assert await status(("JobOrderID", "iso-3"), lot, ("JobOrderParameters", [
        ua.ISA95ParameterDataType(ID="FilamentId", Value=ua.Variant("other"))])) == \
        invalid  # the requirement and the parameter disagree
    assert await status(("JobOrderID", "iso-3"), ("MaterialRequirements", [
        ua.ISA95MaterialDataType(MaterialLotID="nylon", Quantity="5")])) == invalid
    assert await status(("JobOrderID", "iso-1"), lot) == refused  # exists
    wrong_type = await ask(ada, "StoreAndStart", ua.Variant("iso-4"), comment)
    assert wrong_type.StatusCode.name == "BadInvalidArgument"  # a Bad status, per argument
    assert [r.name for r in wrong_type.InputArgumentResults] == ["BadTypeMismatch", "Good"]
    assert (await farm.api.get("/api/v1/print_jobs/iso-3")).status_code == 404


async def test_methods_say_who_may_call_them_and_refuse_another_objects_call(
        farm: Secured, ada: Client, otto: Client) -> None:
    names = await ada.get_namespace_array()
    ns, isa95 = names.index(FARM_URI), names.index(ISA95_URI)
    jobs = names.index(MACHINERY_JOBS_URI)
    printer = ua.NodeId("Printers/m1", ns)
    methods = {"SubmitJob": ua.NodeId("PrintFarm/SubmitJob", ns),
               "ClearBed": ua.NodeId("Printers/m1/ClearBed", ns),
               "Cancel": ua.NodeId("Printers/m1/Cancel", ns),
               "Start": (await ada.nodes.objects.get_child(
                   [f"{ns}:PrintFarm", f"{jobs}:JobManagement", f"{jobs}:JobOrderControl",
                    f"{isa95}:Start"])).nodeid}

    async def executable(client: Client) -> dict[str, bool]:
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=nid,
                                             AttributeId=ua.AttributeIds.UserExecutable)
                              for nid in methods.values()]
        found = await client.uaclient.read(params)
        return {name: value.Value.Value for name, value in zip(methods, found, strict=True)}

    # UserExecutable follows the session's role (Executable stays true for everyone).
    assert await executable(ada) == {"SubmitJob": True, "ClearBed": False, "Cancel": True,
                                     "Start": False}
    assert await executable(otto) == dict.fromkeys(methods, True)
    # A printer's method called on another object: Bad_MethodInvalid, and nothing done.
    request = ua.CallMethodRequest(ObjectId=ua.NodeId("PrintFarm", ns),
                                   MethodId=methods["ClearBed"], InputArguments=[])
    wrong_object = (await otto.uaclient.call([request]))[0]
    assert wrong_object.StatusCode.name == "BadMethodInvalid"
    other_printer = ua.CallMethodRequest(ObjectId=printer, MethodId=methods["SubmitJob"],
                                         InputArguments=[])
    assert (await otto.uaclient.call([other_printer]))[0].StatusCode.name == \
        "BadMethodInvalid"
    # A wrong type: the argument at fault says so in InputArgumentResults.
    farm_folder = await ada.nodes.objects.get_child(f"{ns}:PrintFarm")
    result = await call(farm_folder, ns, "SubmitJob", text("pla"), text("ten grams"),
                        text(""), text(""), text(""))
    assert result.StatusCode.name == "BadInvalidArgument"
    assert [r.name for r in result.InputArgumentResults] == [
        "Good", "BadTypeMismatch", "Good", "Good", "Good"]


async def test_job_responses_by_job_order_id_and_by_state(
        farm: Secured, ada: Client, otto: Client) -> None:
    names = await ada.get_namespace_array()
    ns, isa95 = names.index(FARM_URI), names.index(ISA95_URI)
    jobs = names.index(MACHINERY_JOBS_URI)
    results_path = [f"{ns}:PrintFarm", f"{jobs}:JobManagement", f"{jobs}:JobOrderResults"]
    stored = await upload_as(farm.api, "ada")
    await submit_12g(farm, stored["id"], ("r-1", {"printer_id": "m1"}), ("r-2", {}))

    async def done() -> bool:
        job = (await farm.api.get("/api/v1/print_jobs/r-1")).json()
        return bool(job["status"] == "Done")

    await eventually(done, 60, "r-1 to be Done")
    assert (await farm.api.post("/api/v1/print_jobs/r-2/status", params={"status": "Canceled"})
            ).status_code == 200

    async def ask(client: Client, name: str, *args: ua.Variant) -> ua.CallMethodResult:
        node = await client.nodes.objects.get_child(results_path)
        return await call(node, isa95, name, *args)

    answer = await ask(otto, "RequestJobResponseByJobOrderID", text("r-1"))
    assert answer.StatusCode.is_good(), answer.StatusCode
    response, status = (v.Value for v in answer.OutputArguments)
    assert status == 1  # ReturnStatus: no error
    assert (response.JobOrderID, response.JobState[0].StateNumber,
            response.JobState[0].StateText.Text) == ("r-1", 5, "Ended")
    assert [e.ID for e in response.EquipmentActuals] == ["m1"]
    material = response.MaterialActuals[0]
    assert (material.MaterialLotID, material.Quantity, material.MaterialUse) == (
        "pla", "12", "Consumed")
    assert response.StartTime is not None and response.EndTime >= response.StartTime
    # The admin's job, asked by a user: answered as an unknown job order (as REST's 404).
    for client, job_id in ((ada, "r-1"), (otto, "nope")):
        unknown = await ask(client, "RequestJobResponseByJobOrderID", text(job_id))
        assert (unknown.StatusCode.name, unknown.OutputArguments[-1].Value) == (
            "Uncertain", 2)
        assert len(unknown.OutputArguments) == 2  # JobResponse (empty), then ReturnStatus
    aborted = ua.ISA95StateDataType(StateText=ua.LocalizedText("Aborted"), StateNumber=6)
    ended = ua.ISA95StateDataType(StateText=ua.LocalizedText("Ended"), StateNumber=5)

    async def in_states(client: Client, *states: Any) -> list[Any]:
        result = await ask(client, "RequestJobResponseByJobOrderState",
                           ua.Variant(list(states), ua.VariantType.ExtensionObject,
                                      is_array=True))
        assert result.StatusCode.is_good(), result.StatusCode
        assert result.OutputArguments[1].Value == 1
        return list(result.OutputArguments[0].Value or [])

    by_state = await in_states(otto, aborted)
    assert [r.JobOrderID for r in by_state] == ["r-2"] and by_state[0].EndTime is not None
    assert sorted(r.JobOrderID for r in await in_states(otto, aborted, ended)) == [
        "r-1", "r-2"]
    assert await in_states(ada, aborted, ended) == []  # none of them is ada's


async def test_isa95_job_order_status_events_follow_every_transition(
        farm: Secured, otto: Client) -> None:
    names = await otto.get_namespace_array()
    ns, isa95 = names.index(FARM_URI), names.index(ISA95_URI)
    seen: list[Any] = []

    class Handler:
        def event_notification(self, event: Any) -> None:
            seen.append(event)

    event_type = otto.get_node(ua.NodeId(1006, ns))
    assert (await event_type.read_browse_name()).Name == "PrintJobOrderStatusEventType"
    assert (await otto.get_node(ua.NodeId(1006, isa95)).read_browse_name()).Name == (
        "ISA95JobOrderStatusEventType")
    subscription = await otto.create_subscription(50, Handler())
    await subscription.subscribe_events(otto.nodes.server, [event_type])
    stored = await upload_as(farm.api, "ada")
    await submit_12g(farm, stored["id"], ("e-1", {"printer_id": "m1"}))

    def states() -> list[tuple[str, str]]:
        return [(e.JobOrder.JobOrderID, e.JobState[0].StateText.Text) for e in seen
                if e.JobOrder is not None]

    async def ended() -> bool:
        return ("e-1", "Ended") in states()

    await eventually(ended, 90, "the job order's Ended event")
    assert [s for j, s in states() if j == "e-1"] == ["AllowedToStart", "Running", "Ended"]
    last = next(e for e in reversed(seen) if e.JobOrder and e.JobOrder.JobOrderID == "e-1")
    assert last.JobState[0].StateNumber == 5
    assert last.JobResponse.JobOrderID == "e-1" and last.JobResponse.EndTime is not None
    assert [m.MaterialLotID for m in last.JobOrder.MaterialRequirements] == ["pla"]
    assert [e.ID for e in last.JobOrder.EquipmentRequirements] == ["m1"]
    control = await otto.nodes.objects.get_child(
        [f"{ns}:PrintFarm", f"{names.index(MACHINERY_JOBS_URI)}:JobManagement",
         f"{names.index(MACHINERY_JOBS_URI)}:JobOrderControl"])
    assert last.SourceNode == control.nodeid
    assert len({e.EventId for e in seen}) == len(seen)  # one EventId per transition


async def test_job_order_control_lists_open_job_orders_and_what_they_may_name(
        farm: Secured, ada: Client, otto: Client) -> None:
    names = await otto.get_namespace_array()
    ns, jobs_ns = names.index(FARM_URI), names.index(MACHINERY_JOBS_URI)
    isa95 = names.index(ISA95_URI)
    control = [f"{ns}:PrintFarm", f"{jobs_ns}:JobManagement", f"{jobs_ns}:JobOrderControl"]

    async def read(client: Client, name: str) -> Any:
        node = await client.nodes.objects.get_child([*control, f"{isa95}:{name}"])
        return await node.read_value()

    stored = await upload_as(farm.api, "ada")
    await submit_12g(farm, stored["id"], ("l-1", {"printer_id": "m1"}),
                     ("l-2", {"printer_id": "m1"}))

    async def listed() -> list[tuple[str, str]]:
        return [(e.JobOrder.JobOrderID, e.State[0].StateText.Text)
                for e in await read(otto, "JobOrderList") or []]

    async def one_running() -> bool:
        return await listed() == [("l-1", "Running"), ("l-2", "AllowedToStart")]

    await eventually(one_running, 60, "l-1 Running and l-2 waiting in JobOrderList")
    entry = (await read(otto, "JobOrderList"))[1]
    assert [m.MaterialLotID for m in entry.JobOrder.MaterialRequirements] == ["pla"]
    assert [e.ID for e in entry.JobOrder.EquipmentRequirements] == ["m1"]
    assert await read(otto, "EquipmentID") == ["m1"]
    assert await read(otto, "MaterialDefinitionID") == ["pla"]
    assert await read(otto, "MaterialClassID") == ["PLA"]
    assert await read(otto, "MaxDownloadableJobOrders") == 65_535
    assert await read(otto, "PersonnelID") == []
    # A user reads their job orders through JobOrderResults; the list is the staff's.
    node = await ada.nodes.objects.get_child([*control, f"{isa95}:JobOrderList"])
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        await node.read_value()
    for job_id in ("l-2", "l-1"):
        canceled = await farm.api.post(f"/api/v1/print_jobs/{job_id}/status",
                                       params={"status": "Canceled"})
        assert canceled.status_code == 200, canceled.text

    async def emptied() -> bool:
        return await listed() == []

    await eventually(emptied, 30, "an empty JobOrderList once both ended")
    state = await otto.nodes.objects.get_child([*control, "0:CurrentState"])

    async def aborted() -> bool:
        return bool((await state.read_value()).Text == "Aborted")

    await eventually(aborted, 30, "CurrentState: the last job order's Aborted")


async def test_a_printers_job_management_drives_a_whole_job_of_that_printer(
        farm: Secured, ada: Client, otto: Client) -> None:
    """Machinery Jobs as a client written from OPC 40001-3 uses it, on the printer's own
    JobManagement: Store, Start, Running, Ended, RequestJobResponseByJobOrderID; the
    printer's JobOrderControl acts on that printer's job orders only."""
    other = {"id": "m2", "api": "Mock", "worker": False, "opcua_name": "Printer2"}
    assert (await farm.api.post("/api/v1/printers", json=other)).status_code == 201
    names = await otto.get_namespace_array()
    ns, machinery = names.index(FARM_URI), names.index(MACHINERY_URI)
    jobs, isa95 = names.index(MACHINERY_JOBS_URI), names.index(ISA95_URI)

    async def part(client: Client, printer: str, name: str) -> Node:
        return await client.get_node(ua.NodeId(f"Printers/{printer}", ns)).get_child(
            [f"{machinery}:MachineryBuildingBlocks", f"{jobs}:JobManagement", f"{jobs}:{name}"])

    async def m2_built() -> bool:
        try:
            await part(otto, "m2", "JobOrderControl")
        except ua.UaStatusCodeError:
            return False
        return True

    await eventually(m2_built, 30, "printer m2's JobManagement")
    # m2 holds no spool: FeedstockListType's mandatory <Feedstock> placeholder still has an
    # instance, which says so.
    am = names.index("http://opcfoundation.org/UA/AdditiveManufacturing/")
    feedstock = otto.get_node(ua.NodeId("Printers/m2/Equipment/Feedstock", ns))
    [none] = await feedstock.get_children(refs=ua.ObjectIds.HasComponent)
    assert (await none.read_browse_name()).Name == "NoSpool"
    assert [await (await none.get_child(f"{am}:{name}")).read_value()
            for name in ("Identifier", "Name", "RemainingQuantity")] == ["", "none", 0.0]
    [loaded] = await otto.get_node(ua.NodeId("Printers/m1/Equipment/Feedstock", ns)
                                   ).get_children(refs=ua.ObjectIds.HasComponent)
    assert (await loaded.read_browse_name()).Name == "pla"
    blocks = otto.get_node(ua.NodeId("Printers/m1/MachineryBuildingBlocks", ns))
    add_ins = {(await n.read_browse_name()).Name: n
               for n in await blocks.get_children(refs=ua.ObjectIds.HasAddIn)}
    assert sorted(add_ins) == ["Identification", "JobManagement", "MachineryItemState"]
    management = add_ins["JobManagement"]
    assert (await management.read_display_name()).Text == "JobManagement"
    assert await management.read_type_definition() == ua.NodeId(1003, jobs)
    control = await part(otto, "m1", "JobOrderControl")
    assert await control.read_type_definition() == ua.NodeId(1002, isa95)
    comment = ua.Variant([], ua.VariantType.LocalizedText)

    async def ask(client: Client, printer: str, which: str, name: str,
                  *args: ua.Variant) -> tuple[str, list[Any]]:
        result = await call(await part(client, printer, which), isa95, name, *args)
        return result.StatusCode.name, [v.Value for v in result.OutputArguments or []]

    async def read(printer: str, name: str) -> Any:
        node = await (await part(otto, printer, "JobOrderControl")).get_child(
            f"{isa95}:{name}" if name != "CurrentState" else "0:CurrentState")
        return await node.read_value()

    async def listed(printer: str) -> list[tuple[str, str]]:
        return [(e.JobOrder.JobOrderID, e.State[0].StateText.Text)
                for e in await read(printer, "JobOrderList") or []]

    assert await read("m1", "EquipmentID") == ["m1"]
    assert (await read("m1", "MaterialDefinitionID"), await read("m1", "MaterialClassID")) == (
        ["pla"], ["PLA"])
    assert (await read("m2", "MaterialDefinitionID"), await read("m2", "MaxDownloadableJobOrders")
            ) == ([], 65_535)
    material = [ua.ISA95MaterialDataType(MaterialLotID="pla", Quantity="12")]
    gcode = [ua.ISA95WorkMasterDataType(ID=(await upload_as(farm.api, "ada"))["id"])]
    # Store on m1's JobOrderControl: a job order for m1, waiting for Start.
    assert await ask(ada, "m1", "JobOrderControl", "Store", _order(
        JobOrderID="w-1", MaterialRequirements=material, WorkMasterID=gcode), comment) == (
        "Good", [1])
    job = (await farm.api.get("/api/v1/print_jobs/w-1")).json()
    assert (job["printer_id"], job["approval"], job["status"]) == ("m1", "pending", "Queued")
    # A job order that names another printer is not m1's to store.
    assert await ask(ada, "m1", "JobOrderControl", "Store", _order(
        JobOrderID="w-x", MaterialRequirements=material,
        EquipmentRequirements=[ua.ISA95EquipmentDataType(ID="m2")]), comment) == (
        "Uncertain", [1 << 32])
    assert await ask(ada, "m2", "JobOrderControl", "Store", _order(
        JobOrderID="w-2", MaterialRequirements=material), comment) == ("Good", [1])

    async def stored() -> bool:
        return (await listed("m1"), await listed("m2")) == (
            [("w-1", "NotAllowedToStart")], [("w-2", "NotAllowedToStart")])

    await eventually(stored, 30, "each printer listing its own stored job order")
    # m2's job order is unknown to m1's JobOrderControl and JobOrderResults.
    assert await ask(otto, "m1", "JobOrderControl", "Start", text("w-2"), comment) == (
        "Uncertain", [2])
    assert await ask(otto, "m1", "JobOrderControl", "Cancel", text("w-2"), comment) == (
        "Uncertain", [2])
    unknown = await ask(otto, "m1", "JobOrderResults", "RequestJobResponseByJobOrderID",
                        text("w-2"))
    assert (unknown[0], unknown[1][-1]) == ("Uncertain", 2)
    assert (await farm.api.get("/api/v1/print_jobs/w-2")).json()["status"] == "Queued"
    # Start is an operator's; then the job order runs and ends on m1.
    assert await ask(ada, "m1", "JobOrderControl", "Start", text("w-1"), comment) == (
        "BadUserAccessDenied", [])
    assert await ask(otto, "m1", "JobOrderControl", "Start", text("w-1"), comment) == (
        "Good", [1])

    async def running() -> bool:
        return await listed("m1") == [("w-1", "Running")] and \
            (await read("m1", "CurrentState")).Text == "Running"

    await eventually(running, 60, "w-1 Running in m1's JobOrderList and CurrentState")

    async def ended() -> bool:
        return await listed("m1") == [] and (await read("m1", "CurrentState")).Text == "Ended"

    await eventually(ended, 90, "w-1 Ended on m1's JobOrderControl")
    status, (response, bits) = await ask(otto, "m1", "JobOrderResults",
                                         "RequestJobResponseByJobOrderID", text("w-1"))
    assert (status, bits) == ("Good", 1)
    assert (response.JobOrderID, response.JobState[0].StateNumber,
            response.JobState[0].StateText.Text) == ("w-1", 5, "Ended")
    assert [e.ID for e in response.EquipmentActuals] == ["m1"]
    assert [(m.MaterialLotID, m.Quantity, m.MaterialUse) for m in response.MaterialActuals] == [
        ("pla", "12", "Consumed")]
    assert response.StartTime is not None and response.EndTime >= response.StartTime
    ended_state = ua.ISA95StateDataType(StateText=ua.LocalizedText("Ended"), StateNumber=5)
    states = ua.Variant([ended_state], ua.VariantType.ExtensionObject, is_array=True)
    by_state = {p: await ask(otto, p, "JobOrderResults", "RequestJobResponseByJobOrderState",
                             states) for p in ("m1", "m2")}
    assert [r.JobOrderID for r in by_state["m1"][1][0]] == ["w-1"]
    assert by_state["m2"][1][0] in ([], None)
    # The printer's JobOrderList is the staff's, like the farm's.
    node = await (await part(ada, "m1", "JobOrderControl")).get_child(f"{isa95}:JobOrderList")
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        await node.read_value()
    # The methods are shared with the farm's JobOrderControl: on another object they are
    # refused, and a removed printer takes its JobManagement but not the methods with it.
    start = await control.get_child(f"{isa95}:Start")
    wrong = ua.CallMethodRequest(ObjectId=ua.NodeId("Printers/m1", ns), MethodId=start.nodeid,
                                 InputArguments=[text("w-2"), comment])
    assert (await otto.uaclient.call([wrong]))[0].StatusCode.name == "BadMethodInvalid"
    assert (await farm.api.post("/api/v1/print_jobs/w-2/status",
                                params={"status": "Canceled"})).status_code == 200
    assert (await farm.api.delete("/api/v1/printers/m2")).status_code == 204

    async def m2_gone() -> bool:
        return not await m2_built()

    await eventually(m2_gone, 30, "printer m2's JobManagement to go with it")
    farm_control = await otto.nodes.objects.get_child(
        [f"{ns}:PrintFarm", f"{jobs}:JobManagement", f"{jobs}:JobOrderControl"])
    assert (await farm_control.get_child(f"{isa95}:Start")).nodeid == start.nodeid
    assert await ask(otto, "m1", "JobOrderControl", "Start", text("w-x"), comment) == (
        "Uncertain", [2])


async def test_sessions_of_one_account_signing_in_at_once_all_get_in(farm: Secured) -> None:
    """The sign-in guard checks one password per account at a time; sessions of one
    account that sign in together (a client's connections after a restart) wait their turn
    instead of being refused (two of three were BadUserAccessDenied)."""
    clients = [await secure(connected(farm, "ada"), farm) for _ in range(3)]
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        names = [await client.nodes.server.read_browse_name() for client in clients]
        assert [n.Name for n in names] == ["Server"] * 3
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
    # A wrong password is still refused, and not retried.
    wrong = await secure(connected(farm, "ada", password="not-her-password"), farm)
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        await wrong.connect()
    with contextlib.suppress(Exception):
        await wrong.disconnect()
