"""Values an integrator can trust: a printer's telemetry carries the quality the
specification intends (Part 4, 7.34 and Part 8) and the time of the poll that saw it.

A printer never seen reads Bad_WaitingForInitialData; one that answers reads Good with
SourceTimestamp = the poll's time (its status's `observed_at`); one gone offline keeps its
last value as Uncertain_LastUsableValue. The printer here is the `mock-printer` OctoPrint
emulator process, stopped to make the printer go offline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from tests.emulators import StartEmulator
from tests.farm_helpers import eventually
from tests.opcua_farm import Farm, opcua_farm

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
TELEMETRY = ("NozzleTemperature", "NozzleTargetTemperature", "BedTemperature",
             "BedTargetTemperature")


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    async with opcua_farm(tmp_path, opcua_allow_anonymous=True,
                          printer_worker_interval=0.3) as farm:
        spool = {"id": "pla", "type": "PLA", "color": "black", "total_weight_in_grams": 1000}
        assert (await farm.api.post("/api/v1/filaments", json=spool)).status_code == 201
        yield farm


async def _values(client: Client, printer: str) -> dict[str, ua.DataValue]:
    ns = await client.get_namespace_index(FARM_URI)
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(f"Printers/{printer}/{name}", ns),
                                         AttributeId=ua.AttributeIds.Value)
                          for name in TELEMETRY]
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    found = await client.uaclient.read(params)
    return dict(zip(TELEMETRY, found, strict=True))


async def _until(client: Client, printer: str, want: Any, what: str) -> dict[str, ua.DataValue]:
    async def check() -> dict[str, ua.DataValue] | None:
        values = await _values(client, printer)
        return values if want(values) else None

    found: dict[str, ua.DataValue] = await eventually(check, 60, what, interval=0.1)
    return found


async def test_telemetry_says_never_seen_good_and_offline_with_the_polls_time(
        farm: Farm, start_emulator: StartEmulator) -> None:
    emulator = start_emulator("OctoPrint", job_time=30.0)
    for body in ({"id": "undriven", "api": "Mock", "url": "http://mock-u:5000",
                  "filament_id": "pla"},
                 {"id": "octo", "api": "OctoPrint", "url": emulator.url(), "worker": True,
                  "api_key": "mockkey", "filament_id": "pla"}):
        response = await farm.api.post("/api/v1/printers", json=body)
        assert response.status_code == 201, response.text
    async with Client(farm.url, timeout=30) as client:
        never = await _until(client, "undriven", lambda v: all(
            d.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData for d in v.values()),
            "a printer never seen to read Bad_WaitingForInitialData")
        assert all(d.Value.Value is None for d in never.values())

        good = await _until(client, "octo", lambda v: all(
            d.StatusCode.is_good() and d.Value.Value is not None for d in v.values()),
            "the emulated printer's telemetry to read Good")
        status = (await farm.api.get("/api/v1/printers/octo/status")).json()
        polled = datetime.fromisoformat(status["observed_at"].replace("Z", "+00:00"))
        nozzle = good["NozzleTemperature"]
        assert nozzle.SourceTimestamp is not None and nozzle.ServerTimestamp is not None
        # The poll's time (it may have moved on by the time REST was read: at most 30 s).
        assert abs((nozzle.SourceTimestamp.replace(tzinfo=UTC) - polled).total_seconds()) < 31

        emulator.stop()
        offline = await _until(client, "octo", lambda v: all(
            d.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue for d in v.values()),
            "the offline printer's telemetry to read Uncertain_LastUsableValue")
        for name, value in offline.items():
            assert isinstance(value.Value.Value, float), (name, value)
        state = (await farm.api.get("/api/v1/printers/octo/status")).json()["state"]
        assert state == "offline"
