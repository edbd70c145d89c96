"""Printers' URLs and secrets: strict URLs, write-only keys that never follow a new URL,
errors in our own words, PRINTER_NETWORKS at the edge and on every connection."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from mes import networks
from mes.config import Settings, masked_items
from mes.networks import parse_networks
from mes.printers.base import PrinterNotSent
from mes.printers.octoprint import OctoPrintClient
from mes.printers.prusalink import PrusaLinkClient
from mes.state.machine import StateMachine
from mes.state.ops import Op
from mes.state.tables import printers
from mes.state.urls import url_problem
from tests.emulators import StartEmulator
from tests.farm_helpers import api_with, eventually, running_farm, upload
from tests.recording_server import (
    SECRET_BODY,
    Answer,
    RecordingServer,
    always,
    json_answer,
    recording_server,
)

BAD_URLS = [
    "http://user:pw@printer.lan/",
    "http://user@printer.lan/",
    "http://printer.lan/#x",
    "http://printer.lan/?apikey=x",
    "http://printer.lan?apikey=x",
    "ftp://printer.lan",
    "javascript:alert(1)",
    "http://printer.lan/a b",
    " http://printer.lan/",
    "http://printer.lan/\n",
    "http://printer.lan\r\nX-Injected: 1",
    "http://printer.lan/\x7f",
    "http://printér.lan/",
    "http://printer.lan:0/",
    "http://printer.lan:99999/",
    "http://printer.lan:/",
    "http:///path",
    "http://[::1/",
    "http://pr_inter..lan/",
    "http://printer.lan\\@evil/",
]
GOOD_URLS = ["http://192.168.1.20", "https://printer.local:8443/octoprint/", "http://[::1]:5000",
             "HTTP://Printer-1.lan/", "http://printer.lan/a%20b/~x"]
OLD = {"id": "op", "api": "OctoPrint", "url": "http://192.168.1.20", "api_key": "K-OLD-5e1f",
       "camera_url": "http://192.168.1.20/webcam/", "worker": False}


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_rule_refuses(url: str) -> None:
    assert url_problem(url) is not None


@pytest.mark.parametrize("url", GOOD_URLS)
def test_url_rule_accepts(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize("field", ["url", "camera_url"])
@pytest.mark.parametrize("url", BAD_URLS)
async def test_bad_urls_are_422_and_change_nothing(api: httpx.AsyncClient, url: str,
                                                   field: str) -> None:
    assert (await api.post("/api/v1/printers", json=OLD)).status_code == 201
    before = (await api.get("/api/v1/printers")).json()
    for response in (await api.post("/api/v1/printers", json={**OLD, "id": "new", field: url}),
                     await api.patch("/api/v1/printers/op", json={field: url})):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_url" and error["field"] == field
        assert error["message"].startswith(f"{field}: ")
    assert (await api.get("/api/v1/printers")).json() == before
    assert (await api.get("/api/v1/printers/op")).json()["has_api_key"] is True


@pytest.mark.parametrize("url", BAD_URLS)
def test_state_machine_refuses_bad_urls_from_any_source(url: str) -> None:
    machine = StateMachine()
    create = machine.apply({"op": Op.PRINTER_CREATE, "ts": 1.0, "rid": None,
                            "args": {**OLD, "url": url}})
    assert create.error is not None and create.error["code"] == "invalid_url"
    assert machine.apply({"op": Op.PRINTER_CREATE, "ts": 2.0, "rid": None, "args": OLD}).ok
    update = machine.apply({"op": Op.PRINTER_UPDATE, "ts": 3.0, "rid": None,
                            "args": {"id": "op", "camera_url": url}})
    assert update.error is not None and update.error["field"] == "camera_url"


def test_new_url_clears_the_key_in_the_state_machine() -> None:
    machine = StateMachine()

    def do(ts: float, op: str, **args: Any) -> dict[str, Any]:
        outcome = machine.apply({"op": op, "ts": ts, "rid": None, "args": args})
        assert outcome.ok, outcome.error
        value: dict[str, Any] = outcome.value
        return value

    assert do(1, Op.PRINTER_CREATE, **OLD)["has_api_key"] is True
    assert do(2, Op.PRINTER_UPDATE, id="op", url=OLD["url"])["has_api_key"] is True  # same url
    assert do(3, Op.PRINTER_UPDATE, id="op", group="lab")["has_api_key"] is True
    assert do(4, Op.PRINTER_UPDATE, id="op", url="http://10.0.0.9")["has_api_key"] is False
    assert do(5, Op.PRINTER_UPDATE, id="op", api_key="K2")["has_api_key"] is True
    both = do(6, Op.PRINTER_UPDATE, id="op", url="http://10.0.0.10", api_key="K3")
    assert both["has_api_key"] is True
    assert do(7, Op.PRINTER_UPDATE, id="op", url=None)["has_api_key"] is False


async def _read_all(api: httpx.AsyncClient, paths: list[str]) -> str:
    texts = []
    for path in paths:
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text)
        texts.append(response.text)
    return "\n".join(texts)


async def test_a_new_url_never_receives_the_old_key(tmp_path: Path,
                                                   start_emulator: StartEmulator) -> None:
    old_key = "K-OLD-a71c0d"
    emulator = start_emulator("OctoPrint", api_key=old_key)
    async with running_farm(tmp_path, printer_worker_interval=0.1) as (_, api):
        printer = {"id": "op", "api": "OctoPrint", "url": emulator.url(0), "api_key": old_key}
        assert (await api.post("/api/v1/printers", json=printer)).status_code == 201

        async def state_is(wanted: str) -> bool:
            status = (await api.get("/api/v1/printers/op/status")).json()
            return bool(status["state"] == wanted)

        await eventually(lambda: state_is("idle"), 15, "the printer idle with its key")
        with recording_server(always(403)) as server_b:
            moved = await api.patch("/api/v1/printers/op", json={"url": server_b.url})
            assert moved.status_code == 200 and moved.json()["has_api_key"] is False

            async def polled() -> bool:
                return len(server_b.requests) >= 15  # ~1.5 s of polls at 0.1 s

            await eventually(polled, 15, "the worker to poll the new URL")
            assert server_b.received(old_key) == []
            assert all(r.headers.get("X-Api-Key", "") == "" for r in server_b.requests)
            status = (await api.get("/api/v1/printers/op/status")).json()
            assert status["error"] == ("GET /api/printer: HTTP 403 from the printer "
                                       "(check its API key)")

        with recording_server(always(403)) as server_c:
            both = await api.patch("/api/v1/printers/op",
                                   json={"url": server_c.url, "api_key": "K-NEW-33b9"})
            assert both.json()["has_api_key"] is True

            async def new_key_sent() -> bool:
                return bool(server_c.received("K-NEW-33b9"))

            await eventually(new_key_sent, 15, "the new key at the new URL")
            assert server_c.received(old_key) == []
            assert all(r.headers.get("X-Api-Key") == "K-NEW-33b9" for r in server_c.requests)


def _octoprint(state_text: str = "Operational", error: bool = False,
               upload_status: int = 201) -> Any:
    flags = {"operational": not error, "ready": not error, "error": error,
             "closedOrError": error}

    def answer(method: str, path: str) -> Answer:
        if path == "/api/printer":
            return json_answer({"state": {"text": state_text, "flags": flags},
                                "temperature": {}})
        if path == "/api/job":
            return json_answer({"job": {"file": {"name": None}},
                                "progress": {"completion": None}, "state": state_text})
        if path.startswith("/api/files/local") and method == "POST":
            return upload_status, "text/html", SECRET_BODY.encode()
        return 500, "text/plain", SECRET_BODY.encode()

    return answer


def _prusalink_unknown_state(method: str, path: str) -> Answer:
    if path == "/api/v1/status":
        return json_answer({"printer": {"state": SECRET_BODY}})
    if path == "/api/v1/job":
        return 204, "application/json", b""
    return json_answer({"title": SECRET_BODY, "text": SECRET_BODY}, 500)


@asynccontextmanager
async def _servers(*responders: Any) -> AsyncIterator[list[RecordingServer]]:
    from contextlib import ExitStack
    with ExitStack() as stack:
        yield [stack.enter_context(recording_server(r)) for r in responders]


async def test_the_far_sides_words_never_reach_status_or_jobs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cases = {  # printer id: (api, answers, the error we show)
        "http500": ("OctoPrint", always(500), "GET /api/printer: HTTP 500 from the printer"),
        "http401": ("PrusaLink", always(401, '{"text": "' + SECRET_BODY + '"}',
                                        "application/json"),
                    "GET /api/v1/status: HTTP 401 from the printer (check its API key)"),
        "nothttp": ("OctoPrint", lambda m, p: None,
                    "GET /api/printer: unexpected answer from the printer (not valid HTTP)"),
        "notjson": ("OctoPrint", always(200),
                    "GET /api/printer: unexpected answer from the printer (not JSON)"),
        "weird": ("PrusaLink", _prusalink_unknown_state, "PrusaLink reports an unknown state"),
        "octoerr": ("OctoPrint", _octoprint(SECRET_BODY, error=True),
                    "OctoPrint reports a printer error"),
        "upload": ("OctoPrint", _octoprint(SECRET_BODY, upload_status=403), None),
    }
    async with _servers(*(c[1] for c in cases.values())) as servers, \
            running_farm(tmp_path, printer_worker_interval=0.1) as (_, api):
        spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 900}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        for (printer_id, (kind, _, _)), server in zip(cases.items(), servers, strict=True):
            printer = {"id": printer_id, "api": kind, "url": server.url, "api_key": "K"}
            assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
        stored = await upload(api)
        job = {"id": "j1", "printer_id": "upload", "filament_id": "pla",
               "file_id": stored["id"], "print_weight_in_grams": 5}
        assert (await api.post("/api/v1/print_jobs", json=job)).status_code == 201

        for printer_id, (_, _, shown) in cases.items():
            if shown is None:
                continue

            async def shows(pid: str = printer_id) -> dict[str, Any] | None:
                status: dict[str, Any] = (await api.get(f"/api/v1/printers/{pid}/status")).json()
                return status if status.get("error") else None

            status = await eventually(shows, 15, f"an error on {printer_id}")
            assert status["error"] == shown, printer_id

        async def start_failed() -> dict[str, Any] | None:
            data: dict[str, Any] = (await api.get("/api/v1/print_jobs/j1")).json()
            return data if data["last_error"] else None

        failed = await eventually(start_failed, 20, "the upload to fail")
        assert failed["last_error"] == ("upload failed: POST /api/files/local: HTTP 403 from "
                                        "the printer (check its API key)")
        assert failed["hold"] is None or SECRET_BODY not in failed["hold"]["message"]
        seen = await _read_all(api, [
            "/api/v1/printers", "/api/v1/print_jobs", "/api/v1/print_jobs/j1/history",
            *(f"/api/v1/printers/{pid}/status" for pid in cases)])
    assert "SECRET-BODY" not in seen
    assert all(servers_hit.requests for servers_hit in servers)
    assert "SECRET-BODY" not in caplog.text


async def test_full_farm_never_shows_or_logs_the_key(
        tmp_path: Path, start_emulator: StartEmulator,
        caplog: pytest.LogCaptureFixture) -> None:
    key = "K-FARM-9d27e4b1"
    caplog.set_level(logging.DEBUG)
    emulator = start_emulator("OctoPrint", api_key=key, job_time=1.0)
    bodies: list[str] = []

    async def collect(response: httpx.Response) -> None:
        await response.aread()
        bodies.append(response.text)

    async with running_farm(tmp_path, printer_worker_interval=0.1) as (_, api):
        api.event_hooks = {"request": [], "response": [collect]}
        spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 900}
        assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
        printer = {"id": "op", "api": "OctoPrint", "url": emulator.url(0), "api_key": key,
                   "filament_id": "pla"}
        assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
        stored = await upload(api)
        job = {"id": "j1", "filament_id": "pla", "file_id": stored["id"],
               "print_weight_in_grams": 5}
        assert (await api.post("/api/v1/print_jobs", json=job)).status_code == 201

        async def done() -> bool:
            data = (await api.get("/api/v1/print_jobs/j1")).json()
            return bool(data["status"] == "Done")

        await eventually(done, 30, "the job Done on the OctoPrint emulator")
        await _read_all(api, ["/api/v1/printers", "/api/v1/printers/op",
                              "/api/v1/printers/op/status", "/api/v1/print_jobs/j1/history",
                              "/api/v1/cluster", "/api/v1/workers"])
        assert (await api.patch("/api/v1/printers/op", json={"group": "lab"})).status_code == 200
    assert len(bodies) > 10
    assert not [b for b in bodies if key in b or '"api_key"' in b]
    assert any(r.name.startswith(("httpx", "httpcore")) for r in caplog.records)  # DEBUG seen
    leaked = [r for r in caplog.records if key in r.getMessage() or key in str(r.args)]
    assert leaked == [] and key not in caplog.text


async def test_printer_networks_at_the_edge(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    loopback = {"id": "lo", "api": "OctoPrint", "url": "http://127.0.0.1:5999", "api_key": "K"}
    async with api_with(tmp_path / "a", printer_networks="10.0.0.0/8") as api:
        refused = await api.post("/api/v1/printers", json=loopback)
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "printer_network_refused"
        assert refused.json()["error"]["field"] == "url"
        assert "127.0.0.1" in refused.json()["error"]["message"]
        assert (await api.get("/api/v1/printers")).json() == []
        # simulated printers are never connected to: no check, no lookup
        mock = {"id": "m1", "api": "Mock", "url": "http://mock-printer1:5000"}
        assert (await api.post("/api/v1/printers", json=mock)).status_code == 201
        assert (await api.post("/api/v1/printers", json={"id": "m2", "api": "Mock"})
                ).status_code == 201
        record = {"id": "rec", "url": "http://10.1.2.3", "worker": False}
        assert (await api.post("/api/v1/printers", json=record)).status_code == 201
        moved = await api.patch("/api/v1/printers/rec", json={"url": "http://127.0.0.1:80"})
        assert moved.json()["error"]["code"] == "printer_network_refused"
        assert (await api.get("/api/v1/printers/rec")).json()["url"] == "http://10.1.2.3"

        async def no_such_host(host: str, port: int) -> list[str]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(networks, "resolve", no_such_host)
        unresolved = await api.post("/api/v1/printers", json={
            **loopback, "id": "dns", "url": "http://printer.invalid/"})
        assert unresolved.status_code == 422
        assert unresolved.json()["error"]["code"] == "printer_host_unresolved"
    monkeypatch.undo()
    async with api_with(tmp_path / "b", printer_networks="127.0.0.0/8") as api:
        assert (await api.post("/api/v1/printers", json=loopback)).status_code == 201


async def test_connections_recheck_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name accepted once may resolve elsewhere later: every connection checks again."""
    answers = {"printer.lan": ["127.0.0.1"]}

    async def fake_resolve(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(networks, "resolve", fake_resolve)
    with recording_server(lambda m, p: json_answer({"printer": {"state": "IDLE"}})) as server:
        port = server.url.rsplit(":", 1)[1]
        inside = PrusaLinkClient(f"http://printer.lan:{port}", api_key="K",
                                 networks=parse_networks("127.0.0.0/8"))
        assert (await inside.status(expect_job=False)).state == "idle"
        assert server.requests[0].headers["Host"] == f"printer.lan:{port}"
        await inside.aclose()
        outside = OctoPrintClient(f"http://printer.lan:{port}", "K-SECRET",
                                  networks=parse_networks("10.0.0.0/8"))
        with pytest.raises(PrinterNotSent, match=r"address 127\.0\.0\.1 is outside "
                                                 "PRINTER_NETWORKS"):
            await outside.status()
        await outside.aclose()
        answers["printer.lan"] = ["10.0.0.7", "127.0.0.1"]  # one address outside is enough
        again = OctoPrintClient(f"http://printer.lan:{port}", "K-SECRET",
                                networks=parse_networks("10.0.0.0/8"))
        with pytest.raises(PrinterNotSent, match="outside PRINTER_NETWORKS"):
            await again.status()
        await again.aclose()
        assert len(server.requests) == 1
        assert server.received("K-SECRET") == []


async def test_worker_refuses_a_printer_outside_the_networks(tmp_path: Path) -> None:
    """A command that bypassed the REST edge still reaches no printer outside the networks."""
    with recording_server(always(200, "{}", "application/json")) as server:
        async with running_farm(tmp_path, printer_worker_interval=0.1,
                                printer_networks="10.0.0.0/8") as (node, api):
            outcome = await node.writer.submit(Op.PRINTER_CREATE, {
                "id": "lo", "api": "OctoPrint", "url": server.url, "api_key": "K-EDGE-less"})
            assert outcome.ok, outcome.error

            async def refused() -> dict[str, Any] | None:
                status: dict[str, Any] = (await api.get("/api/v1/printers/lo/status")).json()
                return status if status.get("error") else None

            status = await eventually(refused, 15, "the worker's refusal in the status")
            assert status["state"] == "offline"
            assert status["error"] == ("GET /api/printer: address 127.0.0.1 is outside "
                                       "PRINTER_NETWORKS")
        assert server.requests == []


def test_setting_masks_printer_secrets(tmp_path: Path) -> None:
    class WithPrinterSecrets(Settings):
        printer_api_key: str = ""
        printer_password: str = ""

    settings = WithPrinterSecrets(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, printer_api_key="K-SET-1",
        printer_password="P-SET-2", printer_networks="10.0.0.0/8, 192.168.1.0/24")
    shown = dict(masked_items(settings))
    assert shown["PRINTER_API_KEY"] == "***" and shown["PRINTER_PASSWORD"] == "***"
    assert shown["PRINTER_NETWORKS"] == "10.0.0.0/8,192.168.1.0/24"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFT_", "DATA_"))}
    env.update(PRINTER_NETWORKS="10.0.0.0/8", PRINTER_API_KEY="K-ENV-3",
               DATABASE_URL="sqlite+aiosqlite://farm:K-ENV-4@db/x")
    result = subprocess.run([sys.executable, "-c", "from mes.cli import setting; setting()"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "PRINTER_NETWORKS=10.0.0.0/8" in result.stdout.splitlines()
    assert "K-ENV-3" not in result.stdout and "K-ENV-4" not in result.stdout


def test_sql_errors_never_carry_row_values() -> None:
    """An SQL error's text may be logged: it must not quote a row's values (an API key)."""
    machine = StateMachine()
    assert machine.apply({"op": Op.PRINTER_CREATE, "ts": 1.0, "rid": None, "args": OLD}).ok
    duplicate = insert(printers).values(id="op", company="", model="", api_key="K-SQL-77",
                                        created_at=2.0, updated_at=2.0)
    with pytest.raises(IntegrityError) as caught, machine._conn.begin():
        machine._conn.execute(duplicate)
    assert "K-SQL-77" not in str(caught.value) and "K-SQL-77" not in repr(caught.value)
    assert machine.apply({"op": Op.PRINTER_UPDATE, "ts": 3.0, "rid": None,
                          "args": {"id": "op", "group": "lab"}}).ok
