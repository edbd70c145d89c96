"""Record a corpus of a farm built by one release, for tests/test_release_corpus.py to replay.

Run by hand (not by pytest) with the release's code first on PYTHONPATH, e.g. for 0.1.0:

    mkdir -p /tmp/mes-0.1.0 && git archive d64c92f | tar -x -C /tmp/mes-0.1.0
    PYTHONPATH=/tmp/mes-0.1.0 .venv/bin/python tests/corpus/record_release.py \\
        --commit d64c92f --out tests/corpus/release-0.1.0

It starts ONE server process of that code (`python -m mes`, cwd the code's tree) on loopback
ports, builds a printing farm through REST (users of every role with passwords and tokens,
one revoked; spools; mock printers; jobs Done through the printer workers, one Running and
paused, several Queued for different reasons, rejected and canceled ones, an order, brief
style jobs moved by hand; webhooks with their deliveries answered by a receiver on
loopback), waits until nothing moves, reads every fact through the API and writes them to
`facts.json`, stops the server with SIGTERM and packs its DATA_DIR (raft.journal,
raft.journal.meta, raft.snapshot) and UPLOAD_PATH into `data.tar.gz`. It then restarts the
same code in this process on an unpacked copy (no workers, as the test does) and checks that
it reads back exactly the same facts before anything is written.

The helpers `read_facts`, `table_facts`, `diff` and `open_corpus` are shared with the test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.server
import importlib.util
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if __package__ in (None, ""):  # run as a script: make `tests` importable (mes stays first)
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from tests.auth import ADMIN_TOKEN, bearer
from tests.polling import wait_for
from tests.ports import free_port

if TYPE_CHECKING:
    from mes.node import FarmNode

API = "/api/v1"
# The bootstrap admin's token: the token every fact is read with.
READER_TOKEN_NAME = "bootstrap"
# Settings the server ran with that matter to a replay (an Idempotency-Key's request
# includes `needs_approval`, which REQUIRE_APPROVAL decides).
REPLAY_SETTINGS = {"require_approval": True, "raft_snapshot_entries": 40}
# Fields of GET /printers/{id}/status that are not state: the driving node's own memory.
STATUS_NOT_STATE = ("last_seen_at", "age_seconds")
# The in-memory database's scratch file in DATA_DIR (emptied at every start).
SCRATCH = "applied-state.sqlite"
GCODE = b"; corpus cube\nG28\nG1 X10 Y10 Z0.2 F3000\nG1 X60 E5\nG1 Y60 E10\nM84\n"
GCODE_2 = b"; corpus tower\nG28\nG1 Z0.2 F3000\nG1 X20 Y20 E2\nG1 Z10 E20\nM84\n"


# ----------------------------------------------------------------------------- facts


async def read_facts(client: httpx.AsyncClient, window: tuple[float, float]) -> dict[str, Any]:
    """Every fact of the farm as the API shows it to the admin `client` authenticates as.

    `window` is the utilisation report's [from, to) (Unix seconds, `to` in the past so that
    the report does not depend on the time it is read at).
    """

    async def get(path: str, **params: Any) -> Any:
        answer = await client.get(API + path, params=params)
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
        assert "x-next-cursor" not in answer.headers, f"GET {path}: more than one page"
        return answer.json()

    page = {"limit": 1000}
    facts: dict[str, Any] = {}
    facts["users"] = await get("/users", **page)
    facts["tokens"] = await get("/tokens", **page)
    facts["printers"] = await get("/printers", **page)
    facts["printer_status"] = {}
    for printer in facts["printers"]:
        status = await get(f"/printers/{printer['id']}/status")
        facts["printer_status"][printer["id"]] = {
            k: v for k, v in status.items() if k not in STATUS_NOT_STATE}
    facts["filaments"] = await get("/filaments", **page)
    facts["files"] = await get("/files", **page)
    facts["print_jobs"] = await get("/print_jobs", **page)
    facts["job_history"] = {job["id"]: await get(f"/print_jobs/{job['id']}/history", **page)
                            for job in facts["print_jobs"]}
    facts["orders"] = await get("/orders", **page)
    facts["webhooks"] = await get("/webhooks")
    facts["deliveries"] = await get("/deliveries", **page)
    facts["audit"] = await get("/audit", **page)
    facts["dashboard_printers"] = await get("/dashboard/printers", **page)
    facts["utilization"] = await get("/utilization", **{"from": window[0], "to": window[1]})
    cluster = await get("/cluster")
    facts["cluster_nodes"] = [
        {k: node.get(k) for k in ("address", "http_url", "lease", "printers")}
        for node in cluster["nodes"]]
    facts["undriven_printers"] = cluster["undriven_printers"]
    return facts


def table_facts(conn: Any) -> dict[str, Any]:
    """Every table of an applied-state database (a SQLAlchemy Connection): its columns, row
    count, and the SHA-256 and rows of its contents read raw from SQLite (no types of any
    mes version in between), ordered by primary key (all columns when it has none)."""
    names = [r[0] for r in conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {name: table_rows(conn, name) for name in names}


def table_rows(conn: Any, name: str, columns: list[str] | None = None) -> dict[str, Any]:
    """One table's `columns` (default: all), row count, digest and rows."""
    info = list(conn.exec_driver_sql(f'PRAGMA table_info("{name}")'))
    present = [r[1] for r in info]
    keys = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
    columns = present if columns is None else columns
    missing = [c for c in columns if c not in present]
    if missing:
        return {"columns": columns, "missing_columns": missing}
    order = [c for c in keys if c in columns] or columns
    quoted = ", ".join(f'"{c}"' for c in columns)
    by = ", ".join(f'"{c}"' for c in order)
    rows = [[_plain(v) for v in row] for row in conn.exec_driver_sql(
        f'SELECT {quoted} FROM "{name}" ORDER BY {by}')]
    sha = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()
    return {"columns": columns, "row_count": len(rows), "sha256": sha, "rows": rows}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"hex": bytes(value).hex()}
    if isinstance(value, float):
        return {"float": value.hex()}
    return value


def diff(recorded: Any, current: Any, path: str = "") -> list[str]:
    """Where `current` differs from `recorded`: every recorded value must be equal; keys that
    only `current` has (fields a later release added) are not differences."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = []
        for key, value in recorded.items():
            if key not in current:
                out.append(f"{path}.{key}: missing (recorded {_short(value)})")
            else:
                out.extend(diff(value, current[key], f"{path}.{key}"))
        return out
    if isinstance(recorded, list) and isinstance(current, list):
        out = []
        if len(recorded) != len(current):
            out.append(f"{path}: {len(current)} items, recorded {len(recorded)}")
        for i, (old, new) in enumerate(zip(recorded, current, strict=False)):
            label = old.get("id") if isinstance(old, dict) and "id" in old else i
            out.extend(diff(old, new, f"{path}[{label}]"))
        return out
    if recorded != current or type(recorded) is not type(current):
        return [f"{path}: {_short(current)}, recorded {_short(recorded)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 300 else text[:297] + "..."


def reader_used(recorded: dict[str, Any], current: dict[str, Any], reader_id: str) -> list[str]:
    """The reader token's `last_used_at` moves whenever a process reads with it (its first
    use in a process is recorded through Raft): it may only grow. Set it back to the
    recorded value in `current` facts and say if it went backwards."""
    out = []
    old = {t["id"]: t for t in recorded["tokens"]}
    for token in current.get("tokens", []):
        if token["id"] == reader_id and token["id"] in old:
            before = old[token["id"]]["last_used_at"]
            now = token.get("last_used_at")
            if before is not None and (now is None or now < before):
                out.append(f".tokens[{token['id']}].last_used_at: {now}, recorded {before} "
                           "(may only grow)")
            token["last_used_at"] = before
    return out


# ----------------------------------------------------------------------------- replay


def unpack(tarball: Path, dest: Path) -> tuple[Path, Path]:
    """Unpack a corpus tarball into `dest`; its data dir and upload dir."""
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / "data", dest / "upload"


def relocate(snapshot: Path, address: str) -> None:
    """Make the single-node cluster in a snapshot's Raft data `address` (pysyncobj keeps the
    members there; the recorded port may be taken when the test runs). The farm's facts,
    which name the recorded address as data, are not touched."""
    import pickle

    from pysyncobj.node import TCPNode

    payload = pickle.loads(snapshot.read_bytes())
    last, before_last, _cluster = payload["raft"]
    payload["raft"] = (last, before_last, {TCPNode(address)})
    snapshot.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


@contextlib.contextmanager
def open_corpus(tarball: Path, dest: Path, raft_self: str, settings: dict[str, Any],
                relocate_to: str | None = None) -> Iterator[FarmNode]:
    """A node of the code on sys.path started on the unpacked corpus, without workers;
    with `relocate_to`, at that Raft address instead of the recorded one."""
    from mes.config import Settings
    from mes.node import FarmNode

    data, upload = unpack(tarball, dest)
    if relocate_to is not None:
        relocate(data / "raft.snapshot", relocate_to)
        raft_self = relocate_to
    node = FarmNode(Settings(_env_file=None, data_dir=data,  # type: ignore[call-arg]
                             upload_path=upload, raft_self=raft_self, raft_write_timeout=3.0,
                             opcua_enabled=False, **settings))
    try:
        yield node
    finally:
        node.close()


def applied_index(node: FarmNode) -> int:
    """The node's applied Raft index (what GET /cluster shows as `applied_index`), read from
    pysyncobj without touching the database (a snapshot may be being restored)."""
    return int(node.raft.raftLastApplied)


# ----------------------------------------------------------------------------- recording


class Receiver:
    """A webhook receiver on loopback that answers 204 to every POST."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append({"path": self.path, "body": json.loads(body or b"null")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Farm:
    """REST calls against the recording server."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base + API, timeout=20.0)

    def call(self, method: str, path: str, token: str = ADMIN_TOKEN, expect: int = 200,
             **kwargs: Any) -> Any:
        answer = self.http.request(method, path, headers={**bearer(token),
                                                          **kwargs.pop("headers", {})},
                                   **kwargs)
        assert answer.status_code == expect, (
            f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def post(self, path: str, body: Any = None, token: str = ADMIN_TOKEN,
             expect: int = 201, **kwargs: Any) -> Any:
        return self.call("POST", path, token, expect,
                         **({"json": body} if body is not None else {}), **kwargs)

    def get(self, path: str, token: str = ADMIN_TOKEN, **params: Any) -> Any:
        return self.call("GET", path, token, params=params)

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.get(f"/print_jobs/{job_id}"))

    def wait_job(self, job_id: str, check: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(lambda: (lambda j: j if check(j) else None)(self.job(job_id)),
                        timeout, f"job {job_id}: {what}")

    def wait_done(self, job_id: str) -> None:
        self.wait_job(job_id, lambda j: j["status"] == "Done", "Done")

    def clear_bed(self, printer_id: str) -> None:
        self.wait_printer(printer_id, lambda p: not p["bed_clear"], "awaiting bed clearing")
        self.post(f"/printers/{printer_id}/bed_cleared", expect=200)

    def wait_printer(self, printer_id: str, check: Callable[[dict[str, Any]], bool],
                     what: str) -> dict[str, Any]:
        return wait_for(lambda: (lambda p: p if check(p) else None)(
            self.get(f"/printers/{printer_id}")), 30.0, f"printer {printer_id}: {what}")

    def applied(self) -> int:
        return int(self.get("/cluster")["applied_index"])


def build_farm(farm: Farm, hooks: Receiver) -> dict[str, Any]:
    """Make the farm; the credentials and requests the test replays."""
    secrets: dict[str, Any] = {}
    # Webhooks first: every later event makes a delivery.
    farm.post("/webhooks", {"id": "wh-all", "url": hooks.url + "/all", "types": ["*"],
                            "description": "every notification"})
    farm.post("/webhooks", {"id": "wh-mock-1", "url": hooks.url + "/mock-1",
                            "types": ["job.done", "job.failed", "printer.attention"],
                            "printer_ids": ["mock-1"]})
    farm.post("/webhooks", {"id": "wh-gone", "url": hooks.url + "/gone", "types": ["job.done"]})
    farm.call("DELETE", "/webhooks/wh-gone")

    # Users of every role; some with passwords and e-mail.
    passwords = {"ada": "ada's long passphrase", "cyd": "cyd's long passphrase",
                 "fay": "fay's long passphrase"}
    users = [("ada", "Ada Operator", "operator", "ada@example.com"),
             ("bob", "Bob Operator", "operator", None),
             ("cyd", "Cyd Student", "user", "cyd@example.com"),
             ("dan", "Dan Student", "user", None),
             ("eve", "Eve Student", "user", None),
             ("fay", "Fay Admin", "admin", "fay@example.com")]
    for user_id, name, role, email in users:
        body: dict[str, Any] = {"id": user_id, "name": name, "role": role}
        if email:
            body["email"] = email
        if user_id in passwords:
            body["password"] = passwords[user_id]
        farm.post("/users", body)
    farm.call("PATCH", "/users/dan", json={"name": "Dan Renamed"})
    farm.call("PATCH", "/users/bob", json={"role": "operator", "email": "bob@example.com"})

    # Tokens: made by the admin for each user, one revoked, one short-lived; eve is disabled
    # after hers was made; cyd signs in with her password (a web session token).
    tokens: dict[str, dict[str, Any]] = {}
    for key, user_id, name, expires in [
            ("ada", "ada", "ada laptop", None), ("bob", "bob", "bob ci", 10 * 365 * 86400),
            ("cyd", "cyd", "cyd laptop", None), ("dan-old", "dan", "dan old phone", None),
            ("dan", "dan", "dan new phone", 86400 * 3650), ("eve", "eve", "eve laptop", None),
            ("fay", "fay", "fay desk", None), ("cyd-short", "cyd", "cyd short", 60)]:
        request: dict[str, Any] = {"name": name, "user_id": user_id}
        if expires:
            request["expires_in_seconds"] = expires
        made = farm.post("/tokens", request)
        tokens[key] = {"id": made["id"], "user_id": user_id, "token": made["token"]}
    farm.call("DELETE", f"/tokens/{tokens['dan-old']['id']}", token=tokens["dan"]["token"])
    tokens["dan-old"]["revoked"] = True
    farm.call("PATCH", "/users/eve", json={"disabled": True})
    tokens["eve"]["disabled_user"] = True
    session = farm.http.post("/session", json={"name": "Cyd Student",
                                               "password": passwords["cyd"]})
    assert session.status_code == 200, session.text
    [web] = [t for t in farm.get("/tokens", user_id="cyd") if t["name"] == "web session"]
    tokens["cyd-session"] = {"id": web["id"], "user_id": "cyd",
                             "token": session.cookies.get("mes_session")}
    farm.http.cookies.clear()
    secrets["tokens"] = tokens
    secrets["passwords"] = {"Ada Operator": passwords["ada"], "Cyd Student": passwords["cyd"],
                            "Fay Admin": passwords["fay"]}
    ada, bob, cyd, dan = (tokens[k]["token"] for k in ("ada", "bob", "cyd", "dan"))

    # Spools, one changed and one deleted.
    for spool_id, kind, color, total, remaining in [
            ("pla-black", "PLA", "black", 1000, None), ("petg-blue", "PETG", "blue", 750, None),
            ("abs-red", "ABS", "red", 500, 480), ("tpu-green", "TPU", "green", 250, None),
            ("petg-white", "PETG", "white", 300, None), ("scrap", "PLA", "grey", 100, None)]:
        spool: dict[str, Any] = {"id": spool_id, "type": kind, "color": color,
                                 "total_weight_in_grams": total}
        if remaining is not None:
            spool["remaining_weight_in_grams"] = remaining
        farm.post("/filaments", spool, token=ada)
    farm.call("PATCH", "/filaments/tpu-green", json={"color": "lime"}, token=bob)
    farm.call("DELETE", "/filaments/scrap", token=ada, expect=204)

    # Printers: three mocks this node drives, a record-only one, one deleted.
    for printer in [
            {"id": "mock-1", "api": "Mock", "filament_id": "pla-black", "company": "Prusa",
             "model": "MK4", "opcua_name": "Mock1", "group": "lab-a"},
            {"id": "mock-2", "api": "Mock", "filament_id": "petg-blue", "company": "Prusa",
             "model": "MK3S", "group": "lab-a"},
            {"id": "mock-3", "api": "Mock", "filament_id": "abs-red", "company": "Bambu",
             "model": "X1", "group": "lab-b"},
            {"id": "rec-1", "url": "http://127.0.0.1:9", "api": "OctoPrint",
             "api_key": "corpus-octoprint-key", "worker": False, "filament_id": "tpu-green",
             "group": "records", "opcua_name": "Record1"},
            {"id": "old-1", "api": "Mock", "worker": False}]:
        farm.post("/printers", printer, token=ada)
    farm.call("DELETE", "/printers/old-1", token=ada, expect=204)
    farm.call("PATCH", "/printers/mock-2", json={"camera_url": "http://127.0.0.1:8/cam"},
              token=bob)
    for printer_id in ("mock-1", "mock-2", "mock-3"):
        farm.wait_printer(printer_id, lambda p: p["drive_state"] == "driven", "driven")
        wait_for(partial(_state_is, farm, printer_id, "idle"), 30.0, f"{printer_id} idle")

    # A file through the files route.
    stored = farm.post("/files", token=cyd, files={"file": ("cube.gcode", GCODE)})
    file_id = stored["id"]

    # Done: an operator's job with its G-code in the same request ...
    farm.post("/print_jobs", token=ada, data={"id": "j-done-1", "filament_id": "pla-black",
                                              "print_weight_in_grams": "15"},
              files={"file": ("tower.gcode", GCODE_2)})
    farm.wait_done("j-done-1")
    farm.clear_bed("mock-1")
    # ... an order of a user's two jobs, approved, printed one after the other ...
    farm.post("/orders", {"id": "ord-1", "name": "cyd's two cubes", "jobs": [
        {"id": "j-ord-1", "filament_id": "pla-black", "file_id": file_id,
         "print_weight_in_grams": 10},
        {"id": "j-ord-2", "filament_id": "pla-black", "file_id": file_id,
         "print_weight_in_grams": 12}]}, token=cyd)
    for job_id in ("j-ord-1", "j-ord-2"):
        farm.post(f"/print_jobs/{job_id}/approve", token=ada, expect=200)
        farm.wait_done(job_id)
        farm.clear_bed("mock-1")
    # ... and a user's job sent with an Idempotency-Key (the test sends it again), whose
    # bed is left uncleared.
    idem = {"key": "corpus-idem-1", "token": "cyd",
            "body": {"id": "j-done-2", "filament_id": "petg-blue", "file_id": file_id,
                     "print_weight_in_grams": 30}}
    farm.post("/print_jobs", idem["body"], token=cyd, headers={"Idempotency-Key": idem["key"]})
    farm.post("/print_jobs/j-done-2/approve", token=bob, expect=200)
    farm.wait_done("j-done-2")
    secrets["idempotent_job"] = idem

    # Rejected: a user's job an operator refuses.
    farm.post("/print_jobs", {"id": "j-rejected", "filament_id": "pla-black",
                              "file_id": file_id, "print_weight_in_grams": 900}, token=dan)
    farm.post("/print_jobs/j-rejected/reject", {"reason": "900 g is more than a student may"},
              token=ada, expect=200)
    # Canceled while printing.
    farm.post("/print_jobs", {"id": "j-canceled-running", "printer_id": "mock-1",
                              "filament_id": "pla-black", "file_id": file_id,
                              "print_weight_in_grams": 8}, token=ada)
    farm.wait_job("j-canceled-running", lambda j: j["status"] == "Running"
                  and j["phase"] == "printing", "printing")
    farm.post("/print_jobs/j-canceled-running/status?status=canceled", token=ada, expect=200)
    farm.wait_printer("mock-1", lambda p: p["attention"] is None, "no attention")
    wait_for(lambda: farm.get("/printers/mock-1/status")["state"] in ("idle", "finished"),
             30.0, "mock-1 stopped")
    if not farm.get("/printers/mock-1")["bed_clear"]:
        farm.post("/printers/mock-1/bed_cleared", expect=200, token=bob)

    # Running: a print paused on mock-3 (nothing moves after that).
    farm.post("/print_jobs", {"id": "j-running", "printer_id": "mock-3",
                              "filament_id": "abs-red", "file_id": file_id,
                              "print_weight_in_grams": 40}, token=bob)
    farm.wait_job("j-running", lambda j: j["status"] == "Running" and j["phase"] == "printing",
                  "printing")
    farm.post("/print_jobs/j-running/pause", token=bob, expect=200)
    farm.wait_job("j-running", lambda j: j["phase"] == "paused", "paused")
    wait_for(lambda: farm.get("/printers/mock-3/status")["state"] == "paused", 30.0,
             "mock-3 paused")

    # Brief-style records moved by hand on the record-only printer.
    for job_id, moves in [("j-rec-done", ["running", "done"]), ("j-rec-canceled", ["canceled"]),
                          ("j-rec-running", ["running"])]:
        farm.post("/print_jobs", {"id": job_id, "printer_id": "rec-1", "filament_id": "tpu-green",
                                  "filepath": f"/prints/{job_id}.gcode",
                                  "print_weight_in_grams": 20}, token=ada)
        for move in moves:
            farm.post(f"/print_jobs/{job_id}/status?status={move}", token=bob, expect=200)
    farm.post("/printers/rec-1/reservation", {"holder": "maintenance",
                                              "duration_seconds": 30 * 86400},
              token=ada, expect=200)

    # Queued, each for its own reason.
    farm.post("/print_jobs", {"id": "j-q-bed", "printer_id": "mock-2", "filament_id": "petg-blue",
                              "file_id": file_id, "print_weight_in_grams": 25}, token=ada)
    farm.post("/print_jobs", {"id": "j-q-busy", "printer_id": "mock-3", "filament_id": "abs-red",
                              "file_id": file_id, "print_weight_in_grams": 20}, token=bob)
    farm.post("/print_jobs", {"id": "j-q-approval", "filament_id": "pla-black",
                              "file_id": file_id, "print_weight_in_grams": 5}, token=dan)
    farm.post("/print_jobs", {"id": "j-q-no-spool", "filament_id": "petg-white",
                              "file_id": file_id, "print_weight_in_grams": 50}, token=ada)
    farm.post("/print_jobs", {"id": "j-q-record", "filament_id": "pla-black",
                              "filepath": "/prints/record.gcode",
                              "print_weight_in_grams": 7}, token=bob)
    return secrets


def _state_is(farm: Farm, printer_id: str, state: str) -> bool:
    return bool(farm.get(f"/printers/{printer_id}/status")["state"] == state)


def quiet(farm: Farm) -> int:
    """Wait until nothing moves: no delivery pending, no job starting, the applied index
    still for two seconds. The applied index then."""

    def settled() -> bool:
        pending = farm.get("/deliveries", status="pending", limit=1000)
        starting = [j for j in farm.get("/print_jobs", limit=1000) if j["phase"] == "starting"]
        return not pending and not starting

    wait_for(settled, 60.0, "deliveries sent and no job starting")
    last, since = farm.applied(), time.monotonic()
    while time.monotonic() - since < 2.0:
        time.sleep(0.2)
        now = farm.applied()
        if now != last:
            last, since = now, time.monotonic()
    return last


def read_live(base: str, window: tuple[float, float]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_TOKEN),
                                     timeout=20.0) as client:
            return await read_facts(client, window)

    return asyncio.run(run())


def read_replayed(node: FarmNode, window: tuple[float, float]) -> dict[str, Any]:
    from mes.api.app import create_app

    async def run() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://mes",
                                     headers=bearer(ADMIN_TOKEN)) as client:
            return await read_facts(client, window)

    return asyncio.run(run())


def server_env(work: Path, http_port: int, raft_self: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MES_", "RAFT_"))}
    env.update({
        "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(http_port), "RAFT_SELF": raft_self,
        "DATA_DIR": str(work / "data"), "UPLOAD_PATH": str(work / "upload"),
        "MES_ADMIN_TOKEN": ADMIN_TOKEN, "OPCUA_ENABLED": "false",
        "RAFT_SNAPSHOT_ENTRIES": str(REPLAY_SETTINGS["raft_snapshot_entries"]),
        "REQUIRE_APPROVAL": "true", "AUTO_SCHEDULE": "true", "AUTO_CLEAR_BED": "false",
        "MOCK_PRINTER_INTERVAL": "0.1", "MOCK_PRINTER_JOB_TIME": "15",
        "PRINTER_WORKER_INTERVAL": "0.2",
        # Leases renewed rarely, so that nothing is committed while the facts are read.
        "NODE_LEASE_SECONDS": "3600", "NODE_LEASE_RENEW": "600",
        "WEBHOOK_NETWORKS": "127.0.0.0/8", "PRINTER_NETWORKS": "127.0.0.0/8",
        "WEBHOOK_RETRY_BASE": "0.5", "LOG_LEVEL": "INFO",
    })
    return env


def journal_span(data: Path) -> dict[str, Any]:
    """What the data dir holds: files, the journal's first and last entry (read from a copy,
    with pysyncobj's own reader) and the last entry the snapshot covers."""
    from pysyncobj.journal import createJournal

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("raft.journal", "raft.journal.meta"):
            if (data / name).exists():
                shutil.copy(data / name, tmp)
        journal = createJournal(str(Path(tmp) / "raft.journal"))
        span = {"journal_first_index": journal[0][1], "journal_last_index": journal[-1][1],
                "journal_entries": len(journal)}
        journal._destroy()
    with (data / "raft.snapshot").open("rb") as snapshot:
        span["snapshot_last_index"] = pickle.load(snapshot)["raft"][0][1]
    span["files"] = sorted(p.name for p in data.iterdir() if not p.name.startswith(SCRATCH))
    return span


def pack(work: Path, tarball: Path) -> None:
    """DATA_DIR (journal, its meta file, snapshot) and UPLOAD_PATH, gzip -9."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for part in ("data", "upload"):
            for path in sorted((work / part).rglob("*")):
                if path.name.startswith(SCRATCH):
                    continue  # the applied-state scratch file: rebuilt at every start
                info = tar.gettarinfo(str(path), str(path.relative_to(work)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_file():
                    with path.open("rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)
    import gzip

    tarball.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="corpus folder: data.tar.gz, facts.json, README.md")
    parser.add_argument("--commit", default="unknown",
                        help="the commit (release) the code on PYTHONPATH is")
    parser.add_argument("--keep", type=Path, help="keep the server's work dir here")
    args = parser.parse_args()

    spec = importlib.util.find_spec("mes")
    assert spec is not None and spec.origin, "no mes package on PYTHONPATH"
    code = Path(spec.origin).parent.parent
    print(f"recording the mes of {code} (commit {args.commit})")
    work = Path(tempfile.mkdtemp(prefix="mes-corpus-"))
    http_port, raft_self = free_port(), f"127.0.0.1:{free_port()}"
    base = f"http://127.0.0.1:{http_port}"
    hooks = Receiver()
    log = (work / "server.log").open("wb")
    started = time.time()
    server = subprocess.Popen([sys.executable, "-m", "mes"], cwd=code, stdout=log,
                              stderr=subprocess.STDOUT,
                              env=server_env(work, http_port, raft_self))
    try:
        farm = Farm(base)
        wait_for(lambda: httpx.get(base + API + "/health").status_code == 200, 30.0,
                 "the server to be ready")
        wait_for(lambda: farm.http.get("/users/me", headers=bearer(ADMIN_TOKEN))
                 .status_code == 200, 30.0, "the bootstrap admin")
        secrets = build_farm(farm, hooks)
        for _ in range(5):
            index = quiet(farm)
            window = (started - 60.0, time.time())
            facts = read_live(base, window)
            digest = farm.get("/cluster/digest")
            if farm.applied() == index == digest["applied_index"]:
                break
            print("the farm moved while it was read; reading again")
        else:
            raise SystemExit("the farm never stood still")
        assert hooks.received, "no webhook delivery reached the receiver"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code_rc = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise
        log.close()
        hooks.close()
    # uvicorn raises SIGTERM again once its shutdown is complete: -SIGTERM is a clean stop.
    shutdown = (work / "server.log").read_text(errors="replace")
    assert code_rc in (0, -signal.SIGTERM) and "Application shutdown complete" in shutdown, (
        f"the server exited with {code_rc}: see {work / 'server.log'}")

    span = journal_span(work / "data")
    assert "raft.snapshot" in span["files"], span
    assert span["journal_last_index"] == index, (span, index)
    assert 1 < span["journal_first_index"] <= span["snapshot_last_index"] < index, (
        "the data dir must hold a snapshot and journal entries after it (record again)", span)
    args.out.mkdir(parents=True, exist_ok=True)
    pack(work, args.out / "data.tar.gz")

    readers = [t for t in facts["tokens"]
               if t["user_id"] == "admin" and t["name"] == READER_TOKEN_NAME]
    assert len(readers) == 1, readers
    record: dict[str, Any] = {
        "commit": args.commit, "raft_self": raft_self, "http_url": base,
        "settings": REPLAY_SETTINGS, "applied_index": index, "digest": digest,
        "window": list(window), "reader_token_id": readers[0]["id"],
        "data_dir": span, "secrets": secrets, "facts": facts}

    # The same code restarted on the corpus (no workers) reads back the same facts.
    with tempfile.TemporaryDirectory() as tmp, open_corpus(
            args.out / "data.tar.gz", Path(tmp), raft_self, REPLAY_SETTINGS) as node:
        wait_for(lambda: applied_index(node) >= index, 30.0, "the replay")
        record["tables"] = node.read_now(table_facts)
        from mes.state.digest import state_digest

        assert node.read_now(state_digest) == digest["digest"], "the replayed digest differs"
        replayed = read_replayed(node, window)
        mismatch = (reader_used(facts, replayed, record["reader_token_id"])
                    + diff(facts, replayed, ""))
        assert not mismatch, "the replay reads other facts:\n" + "\n".join(mismatch)
    (args.out / "facts.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    write_readme(args, code, record)
    if args.keep:
        shutil.copytree(work, args.keep, dirs_exist_ok=True)
    shutil.rmtree(work)
    size = (args.out / "data.tar.gz").stat().st_size
    print(f"wrote {args.out}: data.tar.gz {size} bytes, applied index {index}, "
          f"journal {span['journal_first_index']}..{span['journal_last_index']}")


def write_readme(args: argparse.Namespace, code: Path, record: dict[str, Any]) -> None:
    facts = record["facts"]
    span = record["data_dir"]
    files = ", ".join(span["files"])
    text = f"""# Corpus of release commit {args.commit}

Recorded by `tests/corpus/record_release.py` on {time.strftime('%Y-%m-%d', time.gmtime())}
with the code of commit `{args.commit}` on PYTHONPATH ({code}):

```shell
mkdir -p /tmp/mes-0.1.0 && git -C /work/main archive {args.commit} | tar -x -C /tmp/mes-0.1.0
cd /work/main && PYTHONPATH=/tmp/mes-0.1.0 .venv/bin/python tests/corpus/record_release.py \\
    --commit {args.commit} --out {args.out}
```

One server process (`python -m mes`, a single node with Raft address
`{record['raft_self']}`, RAFT_SNAPSHOT_ENTRIES={record['settings']['raft_snapshot_entries']},
REQUIRE_APPROVAL=true, mock printers) built the farm through REST; the farm was read through
REST once nothing moved, and the server was stopped with SIGTERM. The same code restarted
on the packed files (no workers) read back the same facts and digest.
`tests/test_release_corpus.py` replays it with the current code.

- `data.tar.gz`: `data/` ({files}) and `upload/` (the G-code blobs). The snapshot covers
  entries up to {span['snapshot_last_index']} and the journal holds entries
  {span['journal_first_index']}..{span['journal_last_index']}: a start loads the snapshot
  and applies the entries after it from the journal. The applied-state scratch file is
  left out (it is rebuilt at every start).
- `facts.json`: `facts` (every fact the API showed the admin at applied index
  {record['applied_index']}), `tables` (every table of the applied state: columns, raw
  rows, SHA-256), `digest` (GET /cluster/digest), `secrets` (the test users' plain tokens
  and passwords: test data), and the Raft address and settings a replay must use.
- The farm: {len(facts['users'])} users, {len(facts['tokens'])} tokens (one revoked, one of
  a disabled user, one that expires a minute after recording), {len(facts['printers'])}
  printers, {len(facts['filaments'])} spools, {len(facts['print_jobs'])} jobs (Done,
  Running, Queued for five reasons, rejected, canceled), {len(facts['orders'])} order,
  {len(facts['webhooks'])} webhooks, {len(facts['deliveries'])} deliveries.

Do not edit these files by hand: record again (the server picks new free ports; the test
reads the Raft address from `facts.json`).
"""
    (args.out / "README.md").write_text(text)


if __name__ == "__main__":
    main()
