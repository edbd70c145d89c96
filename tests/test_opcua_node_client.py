"""node-opcua (a client we did not write) against a real node's embedded server:
Basic256Sha256 SignAndEncrypt with a farm account; browse both paths, watch a mock print
reach 100 and its job Done, receive the completed-print event, submit, clear the bed and
cancel through methods (the REST API agrees), be refused a write and an anonymous session,
and crawl the whole address space Good."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.farm_helpers import upload
from tests.node_opcua import require_node_opcua, run_node_opcua
from tests.opcua_farm import Farm, opcua_farm
from tests.opcua_secured import PASSWORD

FARM = "http://mes-printfarm.org/UA/PrintFarm/"
MACHINERY = "http://opcfoundation.org/UA/Machinery/"
ISA95 = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    require_node_opcua()
    async with opcua_farm(tmp_path, {"otto": "operator"}, printer=True, auto_clear_bed=False,
                          mock_printer_job_time=30) as farm:
        yield farm


def plan(farm: Farm, steps: list[dict[str, Any]], user: str | None = "otto",
         password: str = PASSWORD) -> dict[str, Any]:
    base: dict[str, Any] = {"endpoint": farm.url, "securityMode": "SignAndEncrypt",
                            "securityPolicy": "Basic256Sha256", "timeout": 120, "steps": steps}
    if user is not None:
        base.update(user=user, password=password)
    return base


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(run_node_opcua, plan, 240.0)


def node_id(name: str) -> str:
    return f"nsu={FARM};s={name}"


def submit(file_id: str, job_id: str) -> dict[str, Any]:
    return {"op": "call", "object": node_id("PrintFarm"), "method": node_id("PrintFarm/SubmitJob"),
            "inputs": [{"dataType": "String", "value": "pla"},
                       {"dataType": "UInt32", "value": 10},
                       {"dataType": "String", "value": file_id},
                       {"dataType": "String", "value": "m1"},
                       {"dataType": "String", "value": job_id}], "expect": "Good"}


async def test_node_opcua_drives_the_farm(farm: Farm) -> None:
    stored = await upload(farm.api)
    printer = node_id("Printers/m1")
    result = await run(plan(farm, [
        {"op": "browse", "path": [f"{MACHINERY}|Machines", f"{FARM}|Printer1"]},
        {"op": "browse", "path": [f"{FARM}|PrintFarm", f"{FARM}|Printers", f"{FARM}|Printer1"]},
        {"op": "events", "eventType": node_id("PrintCompletedEventType").replace(
            "s=PrintCompletedEventType", "i=1002"),
         "fields": ["EventType", "SourceNode", f"{FARM}|JobId", f"{FARM}|BedAwaitsClearing"],
         "count": 1, "timeout": 90,
         "after": [{"op": "subscribe", "nodes": [node_id("Printers/m1/CurrentJob/Progress")],
                    "until": [{"index": 0, "eq": 100}], "timeout": 90,
                    "after": [submit(stored["id"], "nj-1")]}]},
        {"op": "read", "nodes": [node_id("Jobs/nj-1/Status")]},
        {"op": "call", "object": printer, "method": node_id("Printers/m1/ClearBed"),
         "expect": "Good"},
        {"op": "subscribe", "nodes": [node_id("Printers/m1/CurrentJob/JobId")],
         "until": [{"index": 0, "eq": "nj-2"}], "timeout": 60,
         "after": [submit(stored["id"], "nj-2")]},
        {"op": "call", "object": printer, "method": node_id("Printers/m1/Cancel"),
         "expect": "Good"},
        {"op": "write", "node": node_id("Printers/m1/State"), "dataType": "String",
         "value": "error", "expect": ["BadUserAccessDenied", "BadNotWritable"]},
        {"op": "crawl"},
    ]))
    assert result["ok"], result
    machines, farm_view, events, status, clear, second, cancel, write, crawl = result["steps"]
    assert machines["status"] == farm_view["status"] == "Good"
    assert machines["nodeId"] == farm_view["nodeId"]
    assert events["met"] is True, events
    event = events["events"][0]
    assert (event["JobId"], event["BedAwaitsClearing"]) == ("nj-1", True)
    assert event["SourceNode"].endswith("s=Printers/m1")
    progress = events["after"][0]
    assert progress["met"] is True, progress
    assert events["after"][0]["after"][0]["outputs"] == ["nj-1"]
    assert status["values"][0]["value"] == "Done"
    assert clear["ok"] and second["met"] and cancel["ok"] and write["ok"], result
    # The REST API agrees with what the methods did.
    first = (await farm.api.get("/api/v1/print_jobs/nj-1")).json()
    assert (first["status"], first["owner_id"]) == ("Done", "otto")
    assert (await farm.api.get("/api/v1/print_jobs/nj-2")).json()["status"] == "Canceled"
    history = (await farm.api.get("/api/v1/print_jobs/nj-2/history")).json()
    assert history[-1]["actor"] == "otto"
    # The whole address space reads Good, data type definitions included.
    assert crawl["nodes"] > 3000 and not crawl["truncated"], crawl
    assert crawl["bad"] == [] and crawl["browseErrors"] == [], crawl["bad"][:10]
    assert set(crawl["values"]) == {"Good"}, crawl["values"]
    for kind in ("structure", "enumeration"):
        assert set(crawl["definitions"][kind]) == {"Good"}, crawl["definitions"]


async def test_node_opcua_receives_isa95_job_order_status_events(farm: Farm) -> None:
    stored = await upload(farm.api)
    result = await run(plan(farm, [
        {"op": "events", "eventType": f"nsu={FARM};i=1006",
         "fields": ["EventType", "SourceNode", f"{ISA95}|JobOrder", f"{ISA95}|JobState",
                    f"{ISA95}|JobResponse"],
         "count": 3, "timeout": 90, "after": [submit(stored["id"], "iso-1")]},
    ]))
    assert result["ok"], result
    events = result["steps"][0]
    assert events["met"] is True, events
    orders = [(e["JobOrder"]["jobOrderID"], e["JobState"][0]["stateNumber"],
               e["JobState"][0]["stateText"]["text"]) for e in events["events"]]
    assert orders == [("iso-1", 2, "AllowedToStart"), ("iso-1", 3, "Running"),
                      ("iso-1", 5, "Ended")], orders
    assert events["events"][-1]["JobResponse"]["jobOrderID"] == "iso-1"
    assert events["events"][-1]["JobResponse"]["endTime"] is not None
    assert all(e["SourceNode"].endswith("JobManagement.JobOrderControl")
               for e in events["events"]), events["events"]


async def test_node_opcua_is_refused_without_an_account(farm: Farm) -> None:
    anonymous = await run(plan(farm, [{"op": "read", "nodes": ["i=2267"]}], user=None))
    assert anonymous["ok"] is False and anonymous["session"] is False, anonymous
    wrong = await run(plan(farm, [{"op": "read", "nodes": ["i=2267"]}], password="nope-nope"))
    assert (wrong["ok"], wrong["session"], wrong["stage"]) == (False, False, "session"), wrong
    assert wrong["status"] in ("BadUserAccessDenied", "BadIdentityTokenRejected"), wrong


async def test_node_opcua_deadbands_and_a_printers_job_management(farm: Farm) -> None:
    """A Percent deadband (of the EURange) honoured for node-opcua; the printer's own
    JobManagement browsed and its JobOrderControl called for another printer's job."""
    stored = await upload(farm.api)
    progress = node_id("Printers/m1/CurrentJob/Progress")
    jobs = "http://opcfoundation.org/UA/Machinery/Jobs/"
    control = [f"{MACHINERY}|MachineryBuildingBlocks", f"{jobs}|JobManagement",
               f"{jobs}|JobOrderControl"]
    result = await run(plan(farm, [
        {"op": "subscribe", "nodes": [progress], "until": [{"index": 0, "eq": 100}],
         "timeout": 90, "history": 1000,
         "after": [{"op": "subscribe", "nodes": [progress], "history": 1000,
                    "deadband": {"type": "Percent", "value": 25},
                    "until": [{"index": 0, "gte": 75}], "timeout": 90,
                    "after": [submit(stored["id"], "db-1")]}]},
        {"op": "browse", "path": control, "from": node_id("Printers/m1")},
        {"op": "call", "object": {"path": control, "from": node_id("Printers/m1")},
         "method": {"path": [f"{ISA95}|Start"]},
         "inputs": [{"dataType": "String", "value": "db-1"},
                    {"dataType": "LocalizedText", "value": [], "array": True}]},
        {"op": "read", "nodes": [{"path": [*control, f"{ISA95}|EquipmentID"],
                                  "from": node_id("Printers/m1")}]},
    ]))
    assert result["ok"], result
    plain, browse, start, equipment = result["steps"]
    banded = plain["after"][0]
    assert plain["met"] and banded["met"], result
    every, reported = plain["history"][0], banded["history"][0]
    # Without a filter every step of the print is reported; with 25 % of 0..100 only a
    # change of more than 25 from the value reported last.
    assert len(every) > len(reported) >= 2, (every, reported)
    assert all(b - a > 25 for a, b in itertools.pairwise(reported)), reported
    assert browse["status"] == "Good", browse
    # db-1 ran on m1 (it was submitted for m1); started again: not allowed in its state.
    # (node-opcua gives a UInt64 as [high, low]).
    assert (start["status"], start["outputs"]) == ("Uncertain", [[0, 8]]), start
    assert equipment["values"][0]["value"] == ["m1"], equipment


async def test_node_opcua_set_triggering(farm: Farm) -> None:
    """A sampled item linked to a triggering one (SetTriggering) reports only when its
    trigger reports: a print's Progress in Sampling mode, linked to the printer's State."""
    stored = await upload(farm.api)
    state, progress = node_id("Printers/m1/State"), node_id("Printers/m1/CurrentJob/Progress")
    result = await run(plan(farm, [
        {"op": "subscribe", "nodes": [progress], "until": [{"index": 0, "eq": 100}],
         "timeout": 90, "history": 1000,
         "after": [{"op": "subscribe", "nodes": [state, progress], "trigger": 0,
                    "sampled": [1], "queueSize": 1, "history": 1000,
                    # idle, printing, then the end: "finished", or "idle" when the bed
                    # is cleared within one publishing interval (a queue of one keeps the
                    # last).
                    "until": [{"index": 0, "changes": 2}], "timeout": 90,
                    "after": [submit(stored["id"], "tr-1")]}]},
    ]))
    assert result["ok"], result
    plain = result["steps"][0]
    linked = plain["after"][0]
    assert plain["met"] and linked["met"], result
    assert linked["triggering"] == {"status": "Good", "addResults": ["Good"]}, linked
    assert linked["history"][0][1] == "printing", linked
    assert linked["history"][0][2] in ("finished", "idle"), linked
    states, sampled = linked["counts"]
    every = plain["counts"][0]
    # Progress changed at every step of the print (every); sampled with a queue of one it
    # reported at most once per report of State (its trigger), and at least its first value.
    assert 1 <= sampled <= states < every, (linked["history"], plain["history"])
