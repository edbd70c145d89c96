"""HistoryRead from the replicated state: a job's status changes, a printer's states and the
farm's events, with the EventIds the live events had; what has no history says so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from asyncua import Client, ua

from mes.state.tables import printer_state_intervals
from tests.farm_helpers import eventually, upload
from tests.opcua_farm import Farm, opcua_farm

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    async with opcua_farm(tmp_path, opcua_allow_anonymous=True, printer=True,
                          mock_printer_job_time=4) as farm:
        yield farm


def _raw(node: ua.NodeId, per_node: int = 0, point: bytes | None = None
         ) -> ua.HistoryReadParameters:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = ua.ReadRawModifiedDetails(
        IsReadModified=False, StartTime=ua.get_win_epoch(), EndTime=ua.get_win_epoch(),
        NumValuesPerNode=per_node, ReturnBounds=False)
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.ReleaseContinuationPoints = False  # as clients send it (asyncua's default: True)
    params.NodesToRead = [ua.HistoryReadValueId(NodeId=node, ContinuationPoint=point)]
    return params


def _events(node: ua.NodeId, select: list[ua.SimpleAttributeOperand]
            ) -> ua.HistoryReadParameters:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = ua.ReadEventDetails(
        NumValuesPerNode=0, StartTime=ua.get_win_epoch(), EndTime=ua.get_win_epoch(),
        Filter=ua.EventFilter(SelectClauses=select))
    params.NodesToRead = [ua.HistoryReadValueId(NodeId=node)]
    return params


def _clause(name: str, ns: int) -> ua.SimpleAttributeOperand:
    return ua.SimpleAttributeOperand(
        TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
        BrowsePath=[ua.QualifiedName(name, 0 if name in ("EventId", "EventType", "Time")
                                     else ns)],
        AttributeId=ua.AttributeIds.Value)


async def test_a_jobs_statuses_and_the_farms_events_are_read_back(farm: Farm) -> None:
    async with Client(farm.url, timeout=30) as client:
        ns = await client.get_namespace_index(FARM_URI)
        live: list[list[Any]] = []

        class Handler:
            def event_notification(self, event: Any) -> None:
                live.append([f.Value for f in event.event_fields])

        select = [_clause(n, ns) for n in ("EventId", "EventType", "Time", "JobId",
                                           "ToStatus")]
        subscription = await client.create_subscription(50, Handler())
        await subscription.subscribe_events(
            client.nodes.server, [ua.NodeId(1001, ns), ua.NodeId(1002, ns)],
            evfilter=ua.EventFilter(SelectClauses=select))
        stored = await upload(farm.api)
        body = {"id": "job1", "filament_id": "pla", "file_id": stored["id"],
                "print_weight_in_grams": 10}
        assert (await farm.api.post("/api/v1/print_jobs", json=body)).status_code == 201
        status = ua.NodeId("Jobs/job1/Status", ns)

        async def done() -> bool:
            try:
                return bool(await client.get_node(status).read_value() == "Done")
            except ua.UaError:  # not in the address space yet
                return False

        await eventually(done, 60, "job1 to be Done")
        await eventually(lambda: _true(any(f[4] == "Done" for f in live)), 10,
                         "the live Done event")
        await subscription.delete()

        # The job's Status, raw: every status it went through, at the times they happened.
        historizing = (await client.get_node(status).read_attribute(
            ua.AttributeIds.Historizing)).Value.Value
        level = (await client.get_node(status).read_attribute(
            ua.AttributeIds.AccessLevel)).Value.Value
        assert historizing is True and level & ua.AccessLevel.HistoryRead.mask
        whole = (await client.uaclient.history_read(_raw(status)))[0]
        assert whole.StatusCode.is_good() and whole.ContinuationPoint is None
        values = [(d.Value.Value, d.SourceTimestamp) for d in whole.HistoryData.DataValues]
        assert [v for v, _ in values] == ["Queued", "Running", "Done"]
        assert [t for _, t in values] == sorted(t for _, t in values)
        # One value at a time, through continuation points: the same values.
        paged, point = [], None
        while True:
            page = (await client.uaclient.history_read(_raw(status, 1, point)))[0]
            paged += [d.Value.Value for d in page.HistoryData.DataValues]
            point = page.ContinuationPoint
            if not point:
                break
        assert paged == ["Queued", "Running", "Done"]
        first = (await client.uaclient.history_read(_raw(status, 1)))[0]
        release = _raw(status, 1, first.ContinuationPoint)
        release.ReleaseContinuationPoints = True
        released = (await client.uaclient.history_read(release))[0]
        assert released.StatusCode.is_good() and released.ContinuationPoint is None

        # The farm's events, read back with the EventIds they had live.
        found = (await client.uaclient.history_read(_events(client.nodes.server.nodeid,
                                                            select)))[0]
        assert found.StatusCode.is_good()
        past = [[f.Value for f in e.EventFields] for e in found.HistoryData.Events]
        assert [(f[3], f[4]) for f in past if f[1] == ua.NodeId(1001, ns)] == [
            ("job1", "Queued"), ("job1", "Running"), ("job1", "Done")]
        assert any(f[1] == ua.NodeId(1002, ns) for f in past)  # PrintCompleted
        assert {bytes(f[0]) for f in live} <= {bytes(f[0]) for f in past}
        # Through the printer: its own events only (here all of them).
        printer = ua.NodeId("Printers/m1", ns)
        on_printer = (await client.uaclient.history_read(_events(printer, select)))[0]
        isa95 = [f for f in past if f[1] == ua.NodeId(1006, ns)]
        assert len(isa95) == 3  # the ISA-95 job order status events: through Server only
        assert len(on_printer.HistoryData.Events) == len(past) - len(isa95)
        isa95_ns = await client.get_namespace_index(
            "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/")
        states = (await client.uaclient.history_read(_events(
            client.nodes.server.nodeid, [_clause("EventId", ns), _clause("JobOrder", isa95_ns),
                                         _clause("JobState", isa95_ns)])))[0]
        orders = [(f[1].Value.JobOrderID, f[2].Value[0].StateText.Text)
                  for f in (e.EventFields for e in states.HistoryData.Events)
                  if f[1].Value is not None]
        assert orders == [("job1", "AllowedToStart"), ("job1", "Running"), ("job1", "Ended")]
        other = ua.NodeId("Printers/nobody", ns)
        assert (await client.uaclient.history_read(_events(other, select)))[0] \
            .HistoryData.Events == []

        # The printer's MachineryItemState, raw: each state it was in, from when it began,
        # as the state stretches of the utilisation reports hold them.
        item_state = ua.NodeId("Printers/m1/MachineryItemState/CurrentState", ns)
        assert (await client.get_node(item_state).read_attribute(
            ua.AttributeIds.Historizing)).Value.Value is True
        states = (await client.uaclient.history_read(_raw(item_state)))[0]
        assert states.StatusCode.is_good() and states.ContinuationPoint is None
        shown = [(d.Value.Value.Text, d.SourceTimestamp) for d in states.HistoryData.DataValues]
        stretches = await farm.node.read(lambda c: [
            (r.state, r.started_at) for r in c.execute(
                sa.select(printer_state_intervals).where(
                    printer_state_intervals.c.printer_id == "m1")
                .order_by(printer_state_intervals.c.seq))])
        of = {"printing": "Executing", "paused": "NotExecuting", "idle": "NotExecuting",
              "offline": "NotAvailable", "error": "OutOfService"}
        assert [s for s, _ in shown] == [of[s] for s, _ in stretches]
        assert [t.timestamp() for _, t in shown] == pytest.approx([t for _, t in stretches])
        assert "Executing" in [s for s, _ in shown]  # job1 printed
        assert shown[-1][0] == (await client.get_node(item_state).read_value()).Text
        one = (await client.uaclient.history_read(_raw(item_state, 1)))[0]
        assert len(one.HistoryData.DataValues) == 1 and one.ContinuationPoint

        # What has no history says so.
        nozzle = ua.NodeId("Printers/m1/NozzleTemperature", ns)
        none = (await client.uaclient.history_read(_raw(nozzle)))[0]
        assert none.StatusCode.name == "BadHistoryOperationUnsupported"
        bad_point = (await client.uaclient.history_read(_raw(status, 1, b"forged")))[0]
        assert bad_point.StatusCode.name == "BadContinuationPointInvalid"


async def _true(value: bool) -> bool:
    return value
