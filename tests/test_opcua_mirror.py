"""The embedded OPC UA server on one node: the farm's address space, live, with events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from asyncua import Client, Node, ua

from mes.opcua.mirror import Mirror
from mes.state.ops import Op
from tests.farm_helpers import eventually, upload
from tests.opcua_farm import Farm, opcua_farm

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
DI_URI = "http://opcfoundation.org/UA/DI/"
AM_URI = "http://opcfoundation.org/UA/AdditiveManufacturing/"
MT_URI = "http://opcfoundation.org/UA/MachineTool/"


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    # Read-only anonymous sessions (security None) for the mirror; tests/test_opcua_security.py
    # and the node-opcua test use accounts over SignAndEncrypt.
    async with opcua_farm(tmp_path, opcua_allow_anonymous=True,
                          mock_printer_job_time=30) as farm:
        yield farm


@pytest.fixture
async def client(farm: Farm) -> AsyncIterator[Client]:
    client = Client(farm.url, timeout=30, watchdog_intervall=10)
    async with client:
        yield client


class Names:
    """Namespace indexes as a client resolves them."""

    def __init__(self, array: list[str]) -> None:
        self.farm = array.index(FARM_URI)
        self.machinery = array.index(MACHINERY_URI)
        self.di = array.index(DI_URI)
        self.am = array.index(AM_URI)
        self.mt = array.index(MT_URI)


async def names(client: Client) -> Names:
    return Names(await client.get_namespace_array())


async def add_spool(api: httpx.AsyncClient, spool: str = "pla", color: str = "black") -> None:
    body = {"id": spool, "type": "PLA", "color": color, "total_weight_in_grams": 1000}
    response = await api.post("/api/v1/filaments", json=body)
    assert response.status_code == 201, response.text


async def add_printer(api: httpx.AsyncClient, pid: str, name: str | None, spool: str = "pla",
                      ) -> None:
    body: dict[str, Any] = {"id": pid, "api": "Mock", "url": f"http://mock-{pid}:5000",
                            "worker": True, "filament_id": spool, "company": "Prusa Research",
                            "model": "MK4"}
    if name:
        body["opcua_name"] = name
    response = await api.post("/api/v1/printers", json=body)
    assert response.status_code == 201, response.text


async def child(client: Client, path: list[str]) -> Node:
    return await client.nodes.objects.get_child(path)


async def value_at(client: Client, path: list[str]) -> Any:
    return await (await child(client, path)).read_value()


async def eventually_value(client: Client, path: list[str], want: Any, timeout: float = 30,
                           ) -> Any:
    async def check() -> Any:
        try:
            value = await value_at(client, path)
        except ua.UaError:
            return None
        return value if (want(value) if callable(want) else value == want) else None

    return await eventually(check, timeout, f"{'/'.join(path)} to be {want!r}", interval=0.1)


async def test_a_printer_is_an_am_machine_under_machines_and_in_the_farm_view(
        farm: Farm, client: Client) -> None:
    await add_spool(farm.api)
    await add_printer(farm.api, "m1", "Printer1")
    await add_printer(farm.api, "m2", None)  # without an OPC UA name: its id
    n = await names(client)
    machine = [f"{n.machinery}:Machines", f"{n.farm}:Printer1"]
    await eventually_value(client, [*machine, f"{n.farm}:State"], lambda v: v is not None)
    ident = [*machine, f"{n.di}:Identification"]
    assert (await value_at(client, [*ident, f"{n.di}:Manufacturer"])).Text == "Prusa Research"
    assert (await value_at(client, [*ident, f"{n.di}:Model"])).Text == "MK4"
    assert await value_at(client, [*ident, f"{n.di}:SerialNumber"]) == "m1"
    assert await value_at(client, [*ident, f"{n.am}:AMTechnologyIdentifier"]) == "MEX"
    printer = await child(client, machine)
    assert (await printer.read_type_definition()) == ua.NodeId(1005, n.am)
    assert printer.nodeid == ua.NodeId("Printers/m1", n.farm)
    # The same object from the farm view.
    farm_view = await child(client, [f"{n.farm}:PrintFarm", f"{n.farm}:Printers",
                                     f"{n.farm}:Printer1"])
    assert farm_view.nodeid == printer.nodeid
    # The printer without an OPC UA name, under its id (it may come in a later mirror pass).
    for path in ([f"{n.farm}:PrintFarm", f"{n.farm}:Printers", f"{n.farm}:m2"],
                 [f"{n.machinery}:Machines", f"{n.farm}:m2"]):
        await eventually(lambda p=path: _present(client, p), 10,  # type: ignore[misc]
                         f"{'/'.join(path)} to appear")
    # The spool as feedstock, the item state, the temperatures with units and range.
    feedstock = [*machine, f"{n.mt}:Equipment", f"{n.am}:Feedstock", f"{n.am}:pla"]
    assert await value_at(client, [*feedstock, f"{n.am}:Name"]) == "PLA_black"
    assert await value_at(client, [*feedstock, f"{n.am}:Identifier"]) == "pla"
    assert await value_at(client, [*feedstock, f"{n.am}:RemainingQuantity"]) == 1000.0
    unit = await value_at(client, [*feedstock, f"{n.am}:RemainingQuantity",
                                   "0:EngineeringUnits"])
    assert unit.DisplayName.Text == "g"
    state = [*machine, f"{n.machinery}:MachineryBuildingBlocks",
             f"{n.machinery}:MachineryItemState", "0:CurrentState"]
    assert (await eventually_value(client, state, lambda v: v.Text == "NotExecuting")
            ).Text == "NotExecuting"
    # OPC 40001-1: the building blocks are AddIns of the machine, referenced from the folder.
    for block in (f"{n.machinery}:MachineryItemState", f"{n.di}:Identification"):
        direct = await child(client, [*machine, block])
        listed = await child(client, [*machine, f"{n.machinery}:MachineryBuildingBlocks",
                                      block])
        assert direct.nodeid == listed.nodeid
        refs = await client.get_node(direct.nodeid).get_references(
            ua.ObjectIds.HasAddIn, ua.BrowseDirection.Inverse)
        assert len(refs) == 2, refs  # from the printer and from MachineryBuildingBlocks
    nozzle = [*machine, f"{n.farm}:NozzleTemperature"]
    await eventually_value(client, nozzle, lambda v: isinstance(v, float))
    assert (await value_at(client, [*nozzle, "0:EngineeringUnits"])).DisplayName.Text == "°C"
    assert (await value_at(client, [*nozzle, "0:EURange"])).High == 350.0
    spool = [f"{n.farm}:PrintFarm", f"{n.farm}:Filaments", f"{n.farm}:pla",
             f"{n.farm}:RemainingWeight"]
    assert await value_at(client, spool) == 1000.0


async def test_a_print_advances_to_done_with_events(farm: Farm, client: Client) -> None:
    await add_spool(farm.api)
    await add_printer(farm.api, "m1", "Printer1")
    n = await names(client)
    machine = [f"{n.machinery}:Machines", f"{n.farm}:Printer1"]
    await eventually_value(client, [*machine, f"{n.farm}:State"], "idle")

    seen: list[Any] = []

    class Handler:
        def event_notification(self, event: Any) -> None:
            seen.append(event)

    subscription = await client.create_subscription(100, Handler())
    changed_type = client.get_node(ua.NodeId(1001, n.farm))
    completed_type = client.get_node(ua.NodeId(1002, n.farm))
    await subscription.subscribe_events(client.nodes.server, [changed_type, completed_type])

    progress: list[float] = []

    class Values:
        def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
            progress.append(value)

    values = await client.create_subscription(50, Values())
    await values.subscribe_data_change(
        await child(client, [*machine, f"{n.farm}:CurrentJob", f"{n.farm}:Progress"]))

    stored = await upload(farm.api)
    body = {"id": "job1", "filament_id": "pla", "file_id": stored["id"],
            "print_weight_in_grams": 10}
    assert (await farm.api.post("/api/v1/print_jobs", json=body)).status_code == 201
    job = [f"{n.farm}:PrintFarm", f"{n.farm}:Jobs", f"{n.farm}:job1", f"{n.farm}:Status"]
    await eventually_value(client, [*machine, f"{n.farm}:CurrentJob", f"{n.farm}:JobId"],
                           "job1")
    await eventually_value(client, job, "Done", timeout=60)

    def of_type(type_node: Node) -> list[Any]:
        return [e for e in seen if e.EventType == type_node.nodeid]

    async def finished() -> bool:
        return bool(of_type(completed_type))

    await eventually(finished, 10, "the PrintCompleted event")
    assert any(0 < p < 100 for p in progress), progress  # the print advanced visibly
    transitions = [(e.FromStatus, e.ToStatus) for e in of_type(changed_type)
                   if e.JobId == "job1"]
    assert ("", "Queued") in transitions
    assert ("Queued", "Running") in transitions
    assert ("Running", "Done") in transitions
    running = next(e for e in of_type(changed_type) if e.ToStatus == "Running")
    assert running.PrinterId == "m1"
    assert running.SourceNode == ua.NodeId("Printers/m1", n.farm)
    completed = of_type(completed_type)
    assert completed[0].JobId == "job1"
    assert completed[0].PrinterId == "m1"
    assert completed[0].BedAwaitsClearing is True
    assert completed[0].SourceNode == ua.NodeId("Printers/m1", n.farm)
    # The spool was charged.
    spool = [f"{n.farm}:PrintFarm", f"{n.farm}:Filaments", f"{n.farm}:pla",
             f"{n.farm}:RemainingWeight"]
    await eventually_value(client, spool, 990.0)
    await subscription.delete()
    await values.delete()


async def test_objects_appear_and_disappear(farm: Farm, client: Client) -> None:
    n = await names(client)
    printers = [f"{n.farm}:PrintFarm", f"{n.farm}:Printers"]
    await add_spool(farm.api, "s1")
    await add_spool(farm.api, "s2", color="red")
    await add_printer(farm.api, "p1", "Alpha", spool="s1")
    path = [*printers, f"{n.farm}:Alpha"]
    await eventually_value(client, [*path, f"{n.farm}:State"], lambda v: v is not None)
    # Renamed: the same node under its new browse name.
    patch = await farm.api.patch("/api/v1/printers/p1", json={"opcua_name": "Beta",
                                                              "filament_id": "s2"})
    assert patch.status_code == 200, patch.text
    beta = [*printers, f"{n.farm}:Beta"]
    await eventually_value(client, [*beta, f"{n.farm}:State"], lambda v: v is not None)
    feed = [*beta, f"{n.mt}:Equipment", f"{n.am}:Feedstock"]
    names_now = await eventually(
        lambda: _child_names(client, feed), 10, "the spool s2 as feedstock")
    assert names_now == ["s2"] or "s2" in names_now
    await eventually(lambda: _child_names_equal(client, feed, ["s2"]), 10, "only s2 loaded")
    # Deleted: gone from both paths.
    item_state = await child(client, [*beta, f"{n.machinery}:MachineryItemState"])
    assert (await farm.api.delete("/api/v1/printers/p1")).status_code == 204
    await eventually(lambda: _gone(client, beta), 10, "the printer to disappear")
    with pytest.raises(ua.UaStatusCodeError, match="BadNodeIdUnknown"):
        await item_state.read_browse_name()
    assert await _gone(client, [f"{n.machinery}:Machines", f"{n.farm}:Beta"])
    assert (await farm.api.delete("/api/v1/filaments/s1")).status_code == 204
    await eventually(lambda: _gone(client, [f"{n.farm}:PrintFarm", f"{n.farm}:Filaments",
                                            f"{n.farm}:s1"]), 10, "the spool to disappear")


async def _child_names(client: Client, path: list[str]) -> list[str] | None:
    try:
        node = await child(client, path)
    except ua.UaError:
        return None
    return [(await c.read_browse_name()).Name for c in await node.get_children()] or None


async def _child_names_equal(client: Client, path: list[str], want: list[str]) -> bool:
    return await _child_names(client, path) == want


async def _gone(client: Client, path: list[str]) -> bool:
    try:
        await child(client, path)
    except ua.UaError:
        return True
    return False


async def test_a_crawl_reads_every_value_good(farm: Farm, client: Client) -> None:
    await add_spool(farm.api)
    await add_printer(farm.api, "m1", "Printer1")
    n = await names(client)
    await eventually_value(client, [f"{n.machinery}:Machines", f"{n.farm}:Printer1",
                                    f"{n.farm}:State"], lambda v: v is not None)
    # Its telemetry reads Bad_WaitingForInitialData until the worker's first status.
    await eventually_value(client, [f"{n.machinery}:Machines", f"{n.farm}:Printer1",
                                    f"{n.farm}:NozzleTemperature"], lambda v: v is not None)
    seen: set[ua.NodeId] = set()
    variables: list[ua.NodeId] = []
    queue = [client.nodes.objects.nodeid]
    while queue:
        batch, queue = queue[:200], queue[200:]
        params = ua.BrowseParameters()
        params.NodesToBrowse = [ua.BrowseDescription(
            NodeId=nid, BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
            IncludeSubtypes=True, NodeClassMask=0, ResultMask=63) for nid in batch]
        for result in await client.uaclient.browse(params):
            assert result.StatusCode.is_good()
            for ref in result.References:
                nid = ref.NodeId.NodeId if hasattr(ref.NodeId, "NodeId") else ref.NodeId
                if nid in seen:
                    continue
                seen.add(nid)
                if ref.NodeClass == ua.NodeClass.Variable:
                    variables.append(nid)
                if ref.NodeClass in (ua.NodeClass.Object, ua.NodeClass.Variable):
                    queue.append(nid)
    assert ua.NodeId("Printers/m1/CurrentJob/Progress", n.farm) in variables
    bad = []
    for start in range(0, len(variables), 500):
        chunk = variables[start:start + 500]
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value)
                              for nid in chunk]
        for nid, value in zip(chunk, await client.uaclient.read(params), strict=True):
            if not value.StatusCode.is_good():
                bad.append((nid.to_string(), value.StatusCode))
    # An anonymous session: JobOrderList (every user's job orders) is the staff's alone.
    denied = ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
    assert bad == [
        (f"ns={n.farm};s=PrintFarm/JobManagement.JobOrderControl.JobOrderList", denied),
        (f"ns={n.farm};s=Printers/m1/MachineryBuildingBlocks/JobManagement/"
         "JobOrderControl/JobOrderList", denied)], bad[:20]
    assert len(variables) > 100


async def test_service_level_and_redundancy(farm: Farm, client: Client) -> None:
    level = await client.nodes.server.get_child("0:ServiceLevel")
    assert await level.read_value() == 255  # a single node leads with a quorum of one
    redundancy = await client.nodes.server.get_child("0:ServerRedundancy")
    assert await redundancy.read_type_definition() == ua.NodeId(
        ua.ObjectIds.NonTransparentRedundancyType)
    assert await (await redundancy.get_child("0:RedundancySupport")).read_value() == 3
    uris = await (await redundancy.get_child("0:ServerUriArray")).read_value()
    assert uris == [f"urn:mes:node:{farm.node.settings.raft_self}"]
    build = await client.nodes.objects.get_child(
        [f"{(await names(client)).farm}:PrintFarm",
         f"{(await names(client)).farm}:AddressSpaceBuildSeconds"])
    assert await build.read_value() > 0
    jobs = "http://opcfoundation.org/UA/Machinery/Jobs/"
    jobs_ns = (await client.get_namespace_array()).index(jobs)
    control = await client.nodes.objects.get_child(
        [f"{(await names(client)).farm}:PrintFarm", f"{jobs_ns}:JobManagement",
         f"{jobs_ns}:JobOrderControl"])
    assert control.nodeid.Identifier == "PrintFarm/JobManagement.JobOrderControl"


async def test_a_restored_snapshot_rebuilds_the_address_space(farm: Farm, client: Client,
                                                              ) -> None:
    await add_spool(farm.api, "keep")
    n = await names(client)
    path = [f"{n.farm}:PrintFarm", f"{n.farm}:Filaments", f"{n.farm}:keep",
            f"{n.farm}:RemainingWeight"]
    await eventually_value(client, path, 1000.0)
    image = farm.node.machine.snapshot()
    await add_spool(farm.api, "later")
    await eventually_value(client, [f"{n.farm}:PrintFarm", f"{n.farm}:Filaments",
                                    f"{n.farm}:later", f"{n.farm}:RemainingWeight"], 1000.0)
    await asyncio.to_thread(farm.node.machine.restore, image)  # as installing a snapshot does
    await eventually(lambda: _gone(client, [f"{n.farm}:PrintFarm", f"{n.farm}:Filaments",
                                            f"{n.farm}:later"]), 10, "the later spool to go")
    assert await value_at(client, path) == 1000.0


async def test_a_job_deleted_by_retention_leaves_the_address_space(farm: Farm,
                                                                     client: Client) -> None:
    await add_spool(farm.api, "old")
    job = {"id": "old-job", "filament_id": "old", "filepath": "a.gcode",
           "print_weight_in_grams": 1}
    assert (await farm.api.post("/api/v1/print_jobs", json=job)).status_code == 201
    canceled = await farm.api.post("/api/v1/print_jobs/old-job/status?status=canceled")
    assert canceled.status_code == 200
    n = await names(client)
    path = [f"{n.farm}:PrintFarm", f"{n.farm}:Jobs", f"{n.farm}:old-job"]
    await eventually(lambda: _present(client, path), 10, "the job in the address space")
    pruned = await farm.node.writer.submit(Op.RETENTION_PRUNE, {
        "jobs_before": time.time() + 1, "audit_before": None, "limit": 10})
    assert pruned.value["jobs"] == 1
    await eventually(lambda: _gone(client, path), 10, "the pruned job to disappear")


async def test_methods_appear_and_go_with_their_printer(farm: Farm, client: Client) -> None:
    n = await names(client)
    objects = client.nodes.objects
    submit = await objects.get_child([f"{n.farm}:PrintFarm", f"{n.farm}:SubmitJob"])
    assert await submit.read_node_class() == ua.NodeClass.Method
    await add_spool(farm.api)
    await add_printer(farm.api, "m1", "Printer1")
    paths = {name: [f"{n.machinery}:Machines", f"{n.farm}:Printer1", f"{n.farm}:{name}"]
             for name in ("Pause", "Resume", "Cancel", "ClearBed")}
    for name, path in paths.items():
        await eventually(lambda p=path: _present(client, p), 10,  # type: ignore[misc]
                         f"the printer's {name} method")
    assert (await farm.api.delete("/api/v1/printers/m1")).status_code == 204
    await eventually(lambda: _gone(client, paths["Pause"]), 10, "the method to go with its printer")
    assert farm.node.opcua is not None
    assert ua.NodeId("Printers/m1/Pause", n.farm) not in farm.node.opcua.server.iserver.aspace


async def _present(client: Client, path: list[str]) -> bool:
    return not await _gone(client, path)


async def test_events_come_from_new_history_only() -> None:
    """A restarted node replays its journal: old transitions are not emitted again, and an
    approval (Queued -> Queued) is no status change."""
    calls: list[tuple[Any, ...]] = []

    class Space:
        printer_ids: ClassVar[set[str]] = {"p1"}

        def printer_node(self, pid: str) -> ua.NodeId:
            return ua.NodeId(f"Printers/{pid}", 5)

    class Events:
        async def job_status_changed(self, *args: Any) -> None:
            calls.append(("changed", *args))

        async def print_completed(self, *args: Any) -> None:
            calls.append(("completed", *args))

        async def job_order_status(self, *args: Any) -> None:
            calls.append(("isa95", *args))

    mirror = Mirror(None, None, Space(), Events())  # type: ignore[arg-type]
    now = time.time()
    history = [
        {"seq": 7, "job_id": "old", "from_status": "Running", "to_status": "Done",
         "at": now - 3600},
        {"seq": 8, "job_id": "new", "from_status": "Queued", "to_status": "Queued", "at": now},
        {"seq": 9, "job_id": "new", "from_status": "Running", "to_status": "Done", "at": now},
    ]
    jobs = {"old": {"assigned_printer_id": "p1"}, "new": {"assigned_printer_id": "p1"}}
    await mirror._emit(history, jobs)
    node = ua.NodeId("Printers/p1", 5)
    assert calls == [("changed", 9, now, "new", node, "p1", "Running", "Done"),
                     ("isa95", 9, now, jobs["new"], "Done"),
                     ("completed", 9, now, "new", node, "p1", True)]
    assert mirror._history_seq == 9


async def test_one_event_has_one_event_id_and_select_clauses_follow_its_type(
        farm: Farm, client: Client) -> None:
    await add_spool(farm.api)
    await add_printer(farm.api, "m1", "Printer1")
    n = await names(client)
    machine = [f"{n.machinery}:Machines", f"{n.farm}:Printer1"]
    await eventually_value(client, [*machine, f"{n.farm}:State"], "idle")
    changed, completed = ua.NodeId(1001, n.farm), ua.NodeId(1002, n.farm)

    def clause(name: str, type_id: ua.NodeId) -> ua.SimpleAttributeOperand:
        return ua.SimpleAttributeOperand(TypeDefinitionId=type_id,
                                         BrowsePath=[ua.QualifiedName(name, 0 if name in (
                                             "EventId", "EventType") else n.farm)],
                                         AttributeId=ua.AttributeIds.Value)

    base = ua.NodeId(ua.ObjectIds.BaseEventType)
    select = [clause("EventId", base), clause("EventType", base), clause("JobId", changed),
              clause("JobId", completed), clause("BedAwaitsClearing", changed)]
    seen: dict[str, list[list[Any]]] = {"server": [], "printer": []}

    class Handler:
        def __init__(self, where: str) -> None:
            self.where = where

        def event_notification(self, event: Any) -> None:
            seen[self.where].append([f.Value for f in event.event_fields])

    printer = await child(client, machine)
    subscriptions = []
    for where, node in (("server", client.nodes.server), ("printer", printer)):
        subscription = await client.create_subscription(50, Handler(where))
        await subscription.subscribe_events(node, [changed, completed],
                                            evfilter=ua.EventFilter(SelectClauses=select))
        subscriptions.append(subscription)
    stored = await upload(farm.api)
    body = {"id": "job1", "filament_id": "pla", "file_id": stored["id"],
            "print_weight_in_grams": 10}
    assert (await farm.api.post("/api/v1/print_jobs", json=body)).status_code == 201

    async def completed_on_both() -> bool:
        return all(any(f[1] == completed for f in seen[w]) for w in seen)

    await eventually(completed_on_both, 60, "PrintCompleted through Server and the printer")
    for subscription in subscriptions:
        await subscription.delete()
    on_printer = {bytes(f[0]): f for f in seen["printer"]}
    on_server = {bytes(f[0]): f for f in seen["server"]}
    assert len(on_printer) == len(seen["printer"])  # no EventId twice
    # Every event the printer delivered is one the Server delivered, with the same EventId.
    assert set(on_printer) <= set(on_server), (seen["printer"], seen["server"])
    for fields in seen["server"]:
        event_type, changed_job, completed_job, bed = fields[1:]
        if event_type == changed:
            assert (changed_job, completed_job, bed) == ("job1", None, None), fields
        elif event_type == completed:
            assert (changed_job, completed_job) == (None, "job1"), fields
        else:  # the ISA-95 job order status event: none of the clauses names its type
            assert event_type == ua.NodeId(1006, n.farm), fields
            assert (changed_job, completed_job, bed) == (None, None, None), fields
