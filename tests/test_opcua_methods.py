"""OPC UA methods: committed as the session's user, with the REST API's rules, answered
with status codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from asyncua import Client, Node, ua

from mes.node import FarmNode
from tests.farm_helpers import eventually, running_farm, upload_as
from tests.opcua_secured import Secured, call, connect, make_user, printer_node, secured_server

U32 = ua.VariantType.UInt32


def _submit_args(filament: Any = "pla", grams: Any = 10, file_id: str = "",
                 printer: str = "", job_id: str = "") -> list[ua.Variant]:
    weight = ua.Variant(grams, U32) if isinstance(grams, int) else ua.Variant(grams)
    return [ua.Variant(filament), weight, ua.Variant(file_id), ua.Variant(printer),
            ua.Variant(job_id)]


async def _farm(client: Client, ns: int) -> Node:
    node: Node = await client.nodes.objects.get_child(f"{ns}:PrintFarm")
    return node


async def _job(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/print_jobs/{job_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def _setup(api: httpx.AsyncClient) -> None:
    body = {"id": "pla", "type": "PLA", "color": "black", "total_weight_in_grams": 5000}
    assert (await api.post("/api/v1/filaments", json=body)).status_code == 201
    printer = {"id": "m1", "api": "Mock", "url": "http://mock-printer1:5000", "worker": True,
               "filament_id": "pla"}
    assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
    await make_user(api, "alice")
    await make_user(api, "bob")
    await make_user(api, "olga", "operator")


async def test_printer_methods_follow_the_rules(tmp_path: Path) -> None:
    async with running_farm(tmp_path, auto_clear_bed=False, mock_printer_job_time=600) as (
            node, api):
        await _setup(api)
        stored = await upload_as(api, "alice")
        async with secured_server(node, tmp_path, ("m1", "ghost")) as secured:
            async with connect(secured, "alice") as alice:
                printer = await printer_node(alice, secured.ns, "m1")
                assert (await call(printer, secured.ns, "Cancel")).StatusCode.name == \
                    "BadInvalidState"  # no job on the printer yet
                result = await call(await _farm(alice, secured.ns), secured.ns, "SubmitJob",
                                    *_submit_args(file_id=stored["id"], printer="m1"))
                assert result.StatusCode.is_good(), result.StatusCode
                job_id = result.OutputArguments[0].Value
                job = await _job(api, job_id)
                assert (job["owner_id"], job["printer_id"], job["file_id"]) == (
                    "alice", "m1", stored["id"])

                async def running() -> bool:
                    return (await _job(api, job_id))["status"] == "Running"

                await eventually(running, 20, "the job to run on the mock printer")
                # Resume a job that is not paused: the rules refuse the transition
                assert (await call(printer, secured.ns, "Resume")).StatusCode.name == \
                    "BadInvalidState"
                ghost = await printer_node(alice, secured.ns, "ghost")
                assert (await call(ghost, secured.ns, "Pause")).StatusCode.name == \
                    "BadNotFound"
            async with connect(secured, "bob") as bob:
                printer = await printer_node(bob, secured.ns, "m1")
                for name in ("Pause", "Cancel"):
                    assert (await call(printer, secured.ns, name)).StatusCode.name == \
                        "BadUserAccessDenied"
                assert (await _job(api, job_id))["status"] == "Running"
            async with connect(secured, "alice") as alice:
                printer = await printer_node(alice, secured.ns, "m1")
                paused = await call(printer, secured.ns, "Pause")
                assert paused.StatusCode.is_good() and paused.OutputArguments[0].Value == job_id
                assert (await _job(api, job_id))["requested_action"] in ("pause", None)

                async def is_paused() -> bool:
                    return (await _job(api, job_id))["phase"] == "paused"

                await eventually(is_paused, 20, "the worker to pause the job")
                assert (await call(printer, secured.ns, "Resume")).StatusCode.is_good()
                assert (await call(printer, secured.ns, "Cancel")).StatusCode.is_good()
                assert (await _job(api, job_id))["status"] == "Canceled"
                status = (await api.get("/api/v1/printers/m1")).json()
                assert status["bed_clear"] is False
                assert (await call(printer, secured.ns, "ClearBed")).StatusCode.name == \
                    "BadUserAccessDenied"
            assert (await api.get("/api/v1/printers/m1")).json()["bed_clear"] is False
            async with connect(secured, "olga") as olga:
                printer = await printer_node(olga, secured.ns, "m1")
                assert (await call(printer, secured.ns, "ClearBed")).StatusCode.is_good()
            assert (await api.get("/api/v1/printers/m1")).json()["bed_clear"] is True


async def test_submit_job_arguments_and_approval(node: FarmNode, api: httpx.AsyncClient,
                                                tmp_path: Path) -> None:
    await _setup(api)
    node.settings.require_approval = True  # read by the methods at each call
    async with secured_server(node, tmp_path, ("m1",)) as secured:
        secured_ns = secured.ns
        async with connect(secured, "alice") as alice:
            farm = await _farm(alice, secured_ns)

            async def status(*args: ua.Variant) -> str:
                name: str = (await call(farm, secured_ns, "SubmitJob", *args)).StatusCode.name
                return name

            assert await status(*_submit_args(grams=0)) == "BadInvalidArgument"
            assert await status(*_submit_args(filament="")) == "BadInvalidArgument"
            assert await status(*_submit_args(filament=7)) == "BadInvalidArgument"
            assert await status(*_submit_args(file_id="not-a-sha")) == "BadInvalidArgument"
            assert await status(*_submit_args(job_id="bad id!")) == "BadInvalidArgument"
            assert await status(*_submit_args()[:3]) == "BadArgumentsMissing"
            assert await status(*_submit_args(filament="nylon")) == "BadNotFound"
            assert await status(*_submit_args(printer="nowhere")) == "BadNotFound"
            assert await status(*_submit_args(file_id="0" * 64)) == "BadNotFound"
            assert await status(*_submit_args(grams=6000)) == "BadInvalidState"  # too heavy
            result = await call(farm, secured_ns, "SubmitJob", *_submit_args(job_id="a1"))
            assert result.StatusCode.is_good() and result.OutputArguments[0].Value == "a1"
            assert await status(*_submit_args(job_id="a1")) == "BadInvalidState"  # exists
        job = await _job(api, "a1")
        assert (job["owner_id"], job["approval"], job["file_id"]) == ("alice", "pending", None)
        async with connect(secured, "olga") as olga:
            result = await call(await _farm(olga, secured_ns), secured_ns, "SubmitJob",
                                *_submit_args(job_id="o1"))
            assert result.StatusCode.is_good()
        assert (await _job(api, "o1"))["approval"] is None  # staff need no approval


async def _control(client: Client, secured: Secured) -> Node:
    node: Node = await client.nodes.objects.get_child(
        [f"{secured.ns}:PrintFarm", f"{secured.ns}:JobOrderControl"])
    return node


async def test_job_order_control_cancel(node: FarmNode, api: httpx.AsyncClient,
                                        tmp_path: Path) -> None:
    await _setup(api)
    async with secured_server(node, tmp_path) as secured:
        async with connect(secured, "alice") as alice:
            farm = await _farm(alice, secured.ns)
            for job_id in ("a1", "a2"):
                assert (await call(farm, secured.ns, "SubmitJob",
                                   *_submit_args(job_id=job_id))).StatusCode.is_good()
            control = await _control(alice, secured)
            comment = ua.Variant([ua.LocalizedText("no longer needed")])
            result = await call(control, secured.ns, "Cancel", ua.Variant("a1"), comment)
            assert result.StatusCode.is_good()
            assert _return_status(result) == 1  # OPC 10031-4 B.2: bit 0, no error
            assert (await _job(api, "a1"))["status"] == "Canceled"
            # Refused job orders answer Uncertain with the ReturnStatus bits saying why.
            again = await call(control, secured.ns, "Cancel", ua.Variant("a1"), comment)
            assert (again.StatusCode.name, _return_status(again)) == ("Uncertain", 1 << 3)
            missing = await call(control, secured.ns, "Cancel", ua.Variant("zz"), comment)
            assert (missing.StatusCode.name, _return_status(missing)) == ("Uncertain", 1 << 1)
            # a queued job is not printing: pause is refused by the rules
            paused = await call(control, secured.ns, "Pause", ua.Variant("a2"), comment)
            assert (paused.StatusCode.name, _return_status(paused)) == ("Uncertain", 1 << 3)
        async with connect(secured, "bob") as bob:
            control = await _control(bob, secured)
            refused = await call(control, secured.ns, "Cancel", ua.Variant("a2"),
                                 ua.Variant([], ua.VariantType.LocalizedText))
            absent = await call(control, secured.ns, "Cancel", ua.Variant("zz"),
                                ua.Variant([], ua.VariantType.LocalizedText))
            # another user's job and a missing one answer alike: no existence oracle
            assert (refused.StatusCode.name, _return_status(refused)) == \
                (absent.StatusCode.name, _return_status(absent)) == ("Uncertain", 1 << 1)
        assert (await _job(api, "a2"))["status"] == "Queued"


def _return_status(result: ua.CallMethodResult) -> int:
    """The ISA-95 ReturnStatus (UInt64 bit map) of a JobOrderControl method's answer."""
    value = result.OutputArguments[0]
    assert value.VariantType == ua.VariantType.UInt64, value
    return int(value.Value)
