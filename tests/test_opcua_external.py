"""External-server mode: a farm writes its printers into (a replica of) the lab's server."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, ua

from mes.config import ConfigError, load_settings
from mes.node import FarmNode
from mes.opcua.external import FIELDS, lab_values, to_variant
from mes.printers.base import PrinterStatus
from tests.farm_helpers import eventually, running_farm, upload
from tests.lab_opcua_server import LabServer, WriteRequest
from tests.ports import free_port

FLOATS = {"nozzle/actual", "nozzle/target", "bed/actual", "bed/target", "job/progress",
          "job/time_used", "job/time_left", "job/time_left_approx"}
# What an idle printer's status carries (no job yet).
IDLE_FIELDS = set(FIELDS) - {f for f in FIELDS if f.startswith("job/")}
# 0.3 s heating, 2 s printing: long enough for progress to be seen rising.
FARM = {"mock_printer_interval": 0.1, "mock_printer_job_time": 20, "opcua_enabled": True}


@pytest.fixture
async def lab() -> AsyncIterator[LabServer]:
    server = LabServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def add_printers(api: httpx.AsyncClient, names: dict[str, str]) -> None:
    body = {"id": "pla", "type": "PLA", "color": "black", "total_weight_in_grams": 5000}
    assert (await api.post("/api/v1/filaments", json=body)).status_code == 201
    for printer_id, opcua_name in names.items():
        printer = {"id": printer_id, "api": "Mock", "url": f"http://{printer_id}.lab:5000",
                   "opcua_name": opcua_name, "worker": True, "filament_id": "pla",
                   "model": "MK4", "camera_url": f"http://{printer_id}.lab:8080/stream"}
        assert (await api.post("/api/v1/printers", json=printer)).status_code == 201, printer


async def print_jobs(api: httpx.AsyncClient, jobs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Print job id -> printer id and wait until all are Done; return the jobs."""
    stored = await upload(api)
    for job_id, printer_id in jobs.items():
        body = {"id": job_id, "printer_id": printer_id, "filament_id": "pla",
                "file_id": stored["id"], "print_weight_in_grams": 5}
        assert (await api.post("/api/v1/print_jobs", json=body)).status_code == 201

    async def done() -> dict[str, dict[str, Any]] | None:
        found = {j: (await api.get(f"/api/v1/print_jobs/{j}")).json() for j in jobs}
        return found if all(j["status"] == "Done" for j in found.values()) else None

    return await eventually(done, 60, f"jobs {sorted(jobs)} Done")


def written(writes: list[WriteRequest], name: str, field: str) -> list[Any]:
    """Every value written to one variable, in order."""
    return [w.values[(name, field)] for w in writes if (name, field) in w.values]


def worker_ticks(node: FarmNode, printer_id: str) -> int:
    pool = node.workers.pool if node.workers else None
    entry = pool.workers.get(printer_id) if pool else None
    return entry[0].ticks if entry else 0


async def test_a_farm_writes_its_printers_into_the_lab_server(
        tmp_path: Path, lab: LabServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mes.opcua.external")
    async with running_farm(tmp_path, opcua_server_url=lab.url, **FARM) as (node, api):
        await add_printers(api, {"m0": "Printer0", "m1": "Printer1", "m2": "Printer77"})
        jobs = await print_jobs(api, {"j0": "m0", "j1": "m1", "j2": "m2"})
        started = time.monotonic()

        async def settled() -> bool:  # the last status (ready, bed cleared) is written
            return all([await lab.value(n, "state") == "ready" for n in ("Printer0", "Printer1")])

        await eventually(settled, 10, "both printers ready at the lab server")
        ticks = {pid: worker_ticks(node, pid) for pid in ("m0", "m1")}

    writes = list(lab.writes)
    for printer_id, name, job_id in (("m0", "Printer0", "j0"), ("m1", "Printer1", "j1")):
        states = written(writes, name, "state")
        assert "printing" in states, states
        assert states[-1] == "ready" and "ready" in states[states.index("printing"):], states
        progress = written(writes, name, "job/progress")
        assert progress == sorted(progress) and progress[-1] == 100.0, progress
        assert len([p for p in progress if 0 < p < 100]) >= 3, progress  # seen rising
        assert await lab.value(name, "job/progress") == 100.0
        assert await lab.value(name, "job/file") == jobs[job_id]["printer_filename"]
        assert await lab.value(name, "job/time_left") == 0.0
        assert await lab.value(name, "url") == f"http://{printer_id}.lab:5000"
        assert await lab.value(name, "camera_url") == f"http://{printer_id}.lab:8080/stream"
        assert await lab.value(name, "model") == "MK4"
        nozzle = await lab.data_value(name, "nozzle/actual")
        assert nozzle.Value is not None and nozzle.Value.VariantType == ua.VariantType.Float
        assert max(written(writes, name, "nozzle/target")) == 210.0
        update = await lab.value(name, "update_time")
        assert isinstance(update, datetime) and update.tzinfo is not None
        age = (datetime.now(UTC) - update).total_seconds()
        assert 0 <= age < 5 + time.monotonic() - started, update
        assert await lab.value(name, "head/x") == 0.0  # not ours: never written

        # One write request per printer per tick, carrying only what changed.
        mine = lab.writes_to(name)
        assert all({obj for obj, _ in w.values} == {name} for w in mine)
        assert 0 < len(mine) <= ticks[printer_id] + 2, (len(mine), ticks[printer_id])
        last: dict[str, Any] = {}
        for request in mine:
            for (_, field), value in request.values.items():
                assert last.get(field, object()) != value, (field, value)
                last[field] = value
        assert {f for _, f in mine[0].values} == IDLE_FIELDS  # all it knows, idle
        assert max(len(w.values) for w in mine[1:]) < len(FIELDS)
        assert all((name, "update_time") in w.values for w in mine)  # it changes every tick
    for request in writes:  # each value went with its variable's own type, and was taken
        assert all(r.is_good() for r in request.results), request
        for (_, field), vtype in request.types.items():
            expected = ua.VariantType.Float if field in FLOATS else (
                ua.VariantType.DateTime if field == "update_time" else ua.VariantType.String)
            assert vtype == expected, (field, vtype)
    assert not [w for w in writes if any(obj not in ("Printer0", "Printer1")
                                         for obj, _ in w.values)]
    unknown = [r for r in caplog.records if "Printer77" in r.getMessage()]
    assert len(unknown) == 1, [r.getMessage() for r in unknown]
    assert jobs["j2"]["status"] == "Done"  # the unknown name's printer printed all the same


async def test_workers_do_not_wait_for_a_slow_or_absent_lab_server(
        tmp_path: Path, lab: LabServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mes.opcua.external")
    async with running_farm(tmp_path, opcua_server_url=lab.url, **FARM) as (node, api):
        await add_printers(api, {"m0": "Printer0", "m1": "Printer1"})
        began = time.monotonic()
        await print_jobs(api, {"a0": "m0", "a1": "m1"})
        normal = time.monotonic() - began
        assert node.workers and node.workers.pool
        pool = node.workers.pool
        writer = pool.external
        assert writer is not None and writer.connected

        # A slow server: each write is held 1 s; the workers tick on regardless, the
        # writer keeps only the latest status per printer.
        lab.write_delay = 1.0
        began = time.monotonic()
        await print_jobs(api, {"b0": "m0", "b1": "m1"})
        slow = time.monotonic() - began
        assert writer.stats()["pending"] <= 2 and writer.superseded > 10, writer.stats()
        lab.write_delay = 0.0

        # The server goes away: jobs still print in normal time.
        old_ids = dict(lab.nodes)
        await lab.stop()
        began = time.monotonic()
        await print_jobs(api, {"c0": "m0", "c1": "m1"})
        away = time.monotonic() - began
        assert writer.stats()["pending"] <= 2
        stats = pool.stats()
        assert stats["lag_p99_ms"] is not None and stats["lag_p99_ms"] < 1000, stats
        for took in (slow, away):
            assert took < normal * 2 + 2.0, (normal, slow, away)

        # It comes back on the same port with new node ids: the values resume.
        lab.writes.clear()
        await lab.start()
        assert any(lab.nodes[key] != old_ids[key] for key in old_ids)
        back = time.monotonic()

        async def resumed() -> bool:
            return all([await lab.value(n, "state") == "ready"
                        and await lab.value(n, "job/progress") == 100.0
                        for n in ("Printer0", "Printer1")])

        # (the latest job's fields too, although the printers are idle now)
        await eventually(resumed, 30, "values written again after the server came back")
        resumed_after = time.monotonic() - back
        update = await lab.value("Printer0", "update_time")
        assert (datetime.now(UTC) - update).total_seconds() < 5
        first = {f for _, f in lab.writes_to("Printer0")[0].values}
        assert first >= IDLE_FIELDS, first  # everything again, with the new node ids
        print(f"\njobs (2 printers): normal {normal:.2f} s, slow server {slow:.2f} s, "
              f"server away {away:.2f} s; values back {resumed_after:.2f} s after restart; "
              f"writer {writer.stats()}; pool lag p99 {stats['lag_p99_ms']} ms")
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unreachable" in m]) == 1, messages  # once per outage
    assert any("is back after" in m for m in messages), messages


async def test_sign_and_encrypt_with_a_user(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mes.opcua.external")
    lab = LabServer(free_port(), pki_dir=tmp_path / "lab-pki", users={"mes": "s3cret-pass"})
    await lab.start()
    try:
        security = {"opcua_server_url": lab.url, "opcua_security": "Basic256Sha256,SignAndEncrypt",
                    "opcua_username": "mes", **FARM}
        async with running_farm(tmp_path / "good", opcua_password="s3cret-pass",
                                **security) as (node, api):
            await add_printers(api, {"m0": "Printer3"})

            async def arrived() -> bool:
                return bool(await lab.value("Printer3", "state") == "ready")

            await eventually(arrived, 20, "Printer3 written over SignAndEncrypt")
            assert (node.settings.data_dir / "opcua" / "external-client-cert.der").is_file()
        assert lab.writes and all(r.is_good() for w in lab.writes for r in w.results)

        lab.writes.clear()
        async with running_farm(tmp_path / "bad", opcua_password="wrong-pass",
                                **security) as (_, api):
            await add_printers(api, {"m0": "Printer4"})

            async def refused() -> bool:
                return any("unreachable" in r.getMessage() for r in caplog.records)

            await eventually(refused, 20, "the wrong password refused")
        assert not lab.writes
        assert await lab.value("Printer4", "state") == "N/A"
    finally:
        await lab.stop()


async def test_the_replica_refuses_a_double_in_a_float_variable(lab: LabServer) -> None:
    async with Client(lab.url) as client:
        ns = await client.get_namespace_index("http://monashautomation.com/opcua-server")
        node = await client.nodes.objects.get_child([f"{ns}:Printer2", f"{ns}:bed",
                                                     f"{ns}:actual"])
        with pytest.raises(ua.UaStatusCodeError, match="BadTypeMismatch"):
            await node.write_value(ua.Variant(60.0, ua.VariantType.Double))
        await node.write_value(to_variant(60, ua.VariantType.Float))
        assert await node.read_value() == 60.0


def test_lab_values_map_our_status_to_the_lab_fields() -> None:
    printer = {"id": "m0", "url": "http://p:5000", "camera_url": None, "model": "XL"}
    status = PrinterStatus(state="paused", nozzle_actual=200.0, nozzle_target=210.0,
                           bed_actual=59.5, bed_target=60.0, file_name="mes-j.gcode",
                           progress=25.0, time_printed=100.0, time_left=400.0)
    values = lab_values(printer, status, 1_700_000_000.0)
    assert values["state"] == "printing"
    assert values["update_time"] == datetime.fromtimestamp(1_700_000_000.0, UTC)
    assert values["job/time_left_approx"] == 300.0  # from progress, when it is known
    assert values["job/time_used"] == 100.0 and values["job/time_left"] == 400.0
    assert "camera_url" not in values  # unknown: not written
    assert set(values) <= set(FIELDS)
    idle = lab_values(printer, PrinterStatus(state="offline"), 0.0)
    assert idle["state"] == "error" and "job/file" not in idle and "job/progress" not in idle
    assert lab_values(printer, PrinterStatus(state="finished"), 0.0)["state"] == "ready"
    assert to_variant(3, ua.VariantType.Float) == ua.Variant(3.0, ua.VariantType.Float)
    with pytest.raises(ValueError):
        to_variant("x", ua.VariantType.ExtensionObject)


@pytest.mark.parametrize("value", ["Basic256Sha256", "Basic128Rsa15,Sign",
                                   "Basic256Sha256,Encrypt"])
def test_a_bad_opcua_security_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="OPCUA_SECURITY"):
        load_settings(_env_file=None, data_dir=tmp_path, opcua_security=value)
    ok = load_settings(_env_file=None, data_dir=tmp_path,
                       opcua_security=" Basic256Sha256,SignAndEncrypt ")
    assert ok.opcua_security == "Basic256Sha256,SignAndEncrypt"
