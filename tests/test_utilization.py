"""Printer state intervals recorded by apply, and the utilisation report built from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.node import FarmNode
from mes.state import queries, utilization
from mes.state.machine import StateMachine
from mes.state.ops import Op
from mes.state.tables import printer_state_intervals
from tests.accounts import make_user
from tests.farm_helpers import eventually, running_farm, upload
from tests.shard_helpers import NODE, epoch_of

T0 = 1_700_000_000.0
MIN = 60.0
HOUR = 3600.0
SHA = "c" * 64


class Farm:
    """A state machine driven with chosen command times."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        self.epoch = 0  # the leader's
        self.epochs: dict[str, int] = {}  # each printer's assignment epoch (on NODE)

    def do(self, at: float, op: str, **args: Any) -> Any:
        if "epoch" in args and op != Op.PRINTER_TELEMETRY:  # its printer's assignment epoch
            printer_id = args.get("printer_id") or args.get("id")
            if printer_id is None:
                job = self.machine.read(lambda c: queries.get_job(c, args["job_id"]))
                assert job is not None
                printer_id = args["printer_id"] = job["assigned_printer_id"]
            args["epoch"] = self.epochs.get(printer_id, 0) + args["epoch"] - self.epoch
        if op == Op.PRINTER_TELEMETRY:
            args["statuses"] = [{**s, "epoch": self.epochs.get(s["printer_id"], 0)
                                 + args.get("epoch", self.epoch) - self.epoch}
                                for s in args["statuses"]]
            args.pop("epoch", None)
        outcome = self.machine.apply({"op": op, "args": args, "rid": None, "ts": at})
        assert outcome.ok, outcome.error
        if op == Op.PRINTER_CREATE:  # placed on a node at once, as the leader does
            self.machine.apply({"op": Op.NODE_LEASE, "args": {"node": NODE}, "ts": at})
            placed = self.machine.apply({"op": Op.SHARD_ASSIGN, "ts": at, "args": {
                "leader_epoch": self.epoch, "now": at,
                "moves": [{"printer_id": args["id"], "epoch": 0, "node": NODE}]}})
            assert placed.ok, placed.error
            self.epochs[args["id"]] = epoch_of(self.machine, args["id"])
        return outcome.value

    def report(self, start: float, end: float, now: float, group: str | None = None
               ) -> dict[str, Any]:
        return self.machine.read(lambda c: utilization.report(c, start, end, now, group))

    def status(self, at: float, printer_id: str, state: str) -> None:
        self.do(at, Op.PRINTER_TELEMETRY, epoch=self.epoch, statuses=[
            {"printer_id": printer_id, "state": state, "observed_at": at}])

    def intervals(self) -> list[tuple[str, str, float, float | None]]:
        iv = printer_state_intervals.c
        return self.machine.read(lambda c: [tuple(r) for r in c.execute(
            printer_state_intervals.select().with_only_columns(
                iv.printer_id, iv.state, iv.started_at, iv.ended_at).order_by(iv.seq))])


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    machine = StateMachine(scratch_dir=tmp_path)
    farm = Farm(machine)
    farm.do(T0 - HOUR, Op.FILAMENT_CREATE, id="f1", type="PLA", color="red",
            total_weight_in_grams=1000)
    farm.do(T0 - HOUR, Op.FILE_REGISTER, id=SHA, name="a.gcode", size=10)
    farm.epoch = int(farm.do(T0 - HOUR, Op.LEADER_BEGIN, leader="n1")["epoch"])
    yield farm
    machine.close()


def print_job(farm: Farm, job_id: str, printer_id: str, start: float, grams: int) -> None:
    farm.do(start, Op.JOB_CREATE, id=job_id, printer_id=printer_id, filament_id="f1",
            file_id=SHA, print_weight_in_grams=grams)
    farm.do(start, Op.JOB_CLAIM, epoch=farm.epoch, job_id=job_id, printer_id=printer_id,
            printer_filename=f"mes-{job_id}.gcode")
    farm.do(start, Op.JOB_STARTED, epoch=farm.epoch, job_id=job_id)


def test_hours_per_state_are_exact_from_the_commands_times(farm: Farm) -> None:
    farm.do(T0, Op.PRINTER_CREATE, id="p1", group="west")  # offline until it reports
    farm.status(T0 + 30 * MIN, "p1", "printing")
    print_job(farm, "j1", "p1", T0 + 30 * MIN, grams=25)
    farm.status(T0 + 30 * MIN + 1, "p1", "printing")  # the same state: no new interval
    farm.status(T0 + 2 * HOUR, "p1", "paused")
    farm.status(T0 + 2 * HOUR + 15 * MIN, "p1", "printing")
    farm.status(T0 + 2 * HOUR + 45 * MIN, "p1", "finished")  # counts as idle
    farm.do(T0 + 2 * HOUR + 45 * MIN, Op.JOB_FINISHED, epoch=farm.epoch, job_id="j1")
    farm.status(T0 + 3 * HOUR, "p1", "idle")  # finished -> idle: the same state
    farm.do(T0 + 3 * HOUR + 45 * MIN, Op.PRINTER_ATTENTION, epoch=farm.epoch, id="p1",
            reason="check the bed")
    farm.do(T0 + 4 * HOUR + 30 * MIN, Op.PRINTER_BED_CLEARED, id="p1")
    farm.status(T0 + 5 * HOUR, "p1", "error")

    got = farm.report(T0, T0 + 6 * HOUR, now=T0 + 6 * HOUR)
    [p1] = got["printers"]
    assert p1["printer_id"] == "p1" and p1["group"] == "west" and p1["exists"] is True
    assert p1["hours"] == {"offline": 0.5, "printing": 2.0, "paused": 0.25,
                           "idle": 1.0 + 0.5, "error": 0.75 + 1.0}
    assert p1["utilization"] == pytest.approx(2.0 / 6.0, abs=1e-6)
    assert p1["jobs"] == {"done": 1, "failed": 0, "rejected": 0, "canceled": 0}
    assert p1["filament_grams"] == 25
    assert got["total"]["hours"] == p1["hours"]
    assert [g["group"] for g in got["groups"]] == ["west"]
    assert farm.intervals()[:2] == [("p1", "offline", T0, T0 + 30 * MIN),
                                    ("p1", "printing", T0 + 30 * MIN, T0 + 2 * HOUR)]
    assert farm.intervals()[-1] == ("p1", "error", T0 + 5 * HOUR, None)


def test_a_window_clips_intervals_and_an_open_one_lasts_until_now(farm: Farm) -> None:
    farm.do(T0, Op.PRINTER_CREATE, id="p1")
    farm.status(T0, "p1", "idle")
    farm.status(T0 + 2 * HOUR, "p1", "printing")  # still printing: open
    # Half of the idle stretch and an hour of the open printing one.
    got = farm.report(T0 + HOUR, T0 + 3 * HOUR, now=T0 + 3 * HOUR)
    assert got["printers"][0]["hours"]["idle"] == 1.0
    assert got["printers"][0]["hours"]["printing"] == 1.0
    # A window reaching past now counts the open interval up to now only.
    got = farm.report(T0 + HOUR, T0 + 10 * HOUR, now=T0 + 2.5 * HOUR)
    assert got["printers"][0]["hours"]["printing"] == 0.5
    # A window wholly before the printer existed has nothing.
    got = farm.report(T0 - 5 * HOUR, T0 - 4 * HOUR, now=T0 + 3 * HOUR)
    assert sum(got["printers"][0]["hours"].values()) == 0
    assert got["printers"][0]["utilization"] is None


def test_jobs_done_failed_rejected_and_canceled_per_printer_and_group(farm: Farm) -> None:
    farm.do(T0, Op.PRINTER_CREATE, id="a1", group="A")
    farm.do(T0, Op.PRINTER_CREATE, id="a2", group="A")
    farm.do(T0, Op.PRINTER_CREATE, id="b1", group="B")
    print_job(farm, "done", "a1", T0, grams=40)
    farm.do(T0 + HOUR, Op.JOB_FINISHED, epoch=farm.epoch, job_id="done")
    print_job(farm, "lost", "a2", T0, grams=30)
    farm.do(T0 + HOUR, Op.JOB_LOST, epoch=farm.epoch, job_id="lost", cause="printer error")
    farm.do(T0, Op.JOB_CREATE, id="queued", printer_id="b1", filament_id="f1",
            file_id=SHA, print_weight_in_grams=5)
    farm.do(T0 + HOUR, Op.JOB_SET_STATUS, id="queued", status="Canceled")
    farm.do(T0, Op.JOB_CREATE, id="refused", printer_id="b1", filament_id="f1",
            file_id=SHA, print_weight_in_grams=5, needs_approval=True)
    farm.do(T0 + HOUR, Op.JOB_REJECT, id="refused", reason="too big")
    print_job(farm, "late", "b1", T0 + 2 * HOUR, grams=50)
    farm.do(T0 + 5 * HOUR, Op.JOB_FINISHED, epoch=farm.epoch, job_id="late")  # after the window

    got = farm.report(T0, T0 + 4 * HOUR, now=T0 + 6 * HOUR)
    jobs = {p["printer_id"]: (p["jobs"], p["filament_grams"]) for p in got["printers"]}
    assert jobs == {"a1": ({"done": 1, "failed": 0, "rejected": 0, "canceled": 0}, 40),
                    "a2": ({"done": 0, "failed": 1, "rejected": 0, "canceled": 0}, 0),
                    "b1": ({"done": 0, "failed": 0, "rejected": 1, "canceled": 2}, 0)}
    groups = {g["group"]: (g["printers"], g["jobs"], g["filament_grams"]) for g in got["groups"]}
    assert groups == {"A": (2, {"done": 1, "failed": 1, "rejected": 0, "canceled": 0}, 40),
                      "B": (1, {"done": 0, "failed": 0, "rejected": 1, "canceled": 2}, 0)}
    assert got["total"]["jobs"] == {"done": 1, "failed": 1, "rejected": 1, "canceled": 2}

    only_b = farm.report(T0, T0 + 6 * HOUR, now=T0 + 6 * HOUR, group="B")
    assert [p["printer_id"] for p in only_b["printers"]] == ["b1"]
    assert only_b["total"]["jobs"] == {"done": 1, "failed": 0, "rejected": 1, "canceled": 2}
    assert only_b["total"]["filament_grams"] == 50
    assert farm.report(T0, T0 + HOUR, now=T0, group="nobody")["printers"] == []


def test_a_deleted_printer_keeps_its_past_and_stops_counting(farm: Farm) -> None:
    farm.do(T0, Op.PRINTER_CREATE, id="p1")
    farm.status(T0, "p1", "idle")
    farm.do(T0 + HOUR, Op.PRINTER_DELETE, id="p1")
    assert farm.intervals()[-1] == ("p1", "idle", T0, T0 + HOUR)
    got = farm.report(T0, T0 + 3 * HOUR, now=T0 + 3 * HOUR)
    assert got["printers"][0]["exists"] is False
    assert got["printers"][0]["hours"]["idle"] == 1.0
    # The same id again starts afresh.
    farm.do(T0 + 2 * HOUR, Op.PRINTER_CREATE, id="p1")
    got = farm.report(T0, T0 + 3 * HOUR, now=T0 + 3 * HOUR)
    assert got["printers"][0]["hours"] == {"printing": 0, "paused": 0, "idle": 1.0,
                                           "offline": 1.0, "error": 0}


def test_attention_counts_as_error_unless_the_printer_prints(farm: Farm) -> None:
    farm.do(T0, Op.PRINTER_CREATE, id="p1")
    farm.status(T0, "p1", "printing")
    farm.do(T0 + HOUR, Op.PRINTER_ATTENTION, epoch=farm.epoch, id="p1", reason="stray")
    farm.status(T0 + 2 * HOUR, "p1", "idle")
    got = farm.report(T0, T0 + 3 * HOUR, now=T0 + 3 * HOUR)["printers"][0]["hours"]
    assert (got["printing"], got["error"], got["idle"]) == (2.0, 1.0, 0)


def test_a_large_telemetry_batch_changes_only_its_printers(farm: Farm) -> None:
    ids = [f"p{i:03d}" for i in range(150)]  # more than are looked up one by one
    for printer_id in ids:
        farm.do(T0, Op.PRINTER_CREATE, id=printer_id)
    farm.do(T0 + HOUR, Op.PRINTER_TELEMETRY, epoch=farm.epoch, statuses=[
        {"printer_id": pid, "state": "printing" if i % 2 else "idle", "observed_at": T0}
        for i, pid in enumerate(ids[:100])])
    got = {p["printer_id"]: p["hours"] for p in
           farm.report(T0, T0 + 3 * HOUR, now=T0 + 3 * HOUR)["printers"]}
    assert len(got) == 150
    for i, printer_id in enumerate(ids):
        hours = got[printer_id]
        if i >= 100:
            assert hours["offline"] == 3.0, printer_id
        else:
            assert hours["offline"] == 1.0, printer_id
            assert hours["printing" if i % 2 else "idle"] == 2.0, printer_id
    assert len(farm.intervals()) == 150 + 100


def test_a_rejected_telemetry_records_no_interval(farm: Farm) -> None:
    farm.do(T0, Op.PRINTER_CREATE, id="p1")
    before = farm.intervals()
    outcome = farm.machine.apply({"op": Op.PRINTER_TELEMETRY, "ts": T0 + 1, "args": {
        "statuses": [{"printer_id": "p1", "epoch": farm.epochs["p1"] + 1, "state": "printing",
                      "observed_at": T0}]}})
    assert outcome.ok and outcome.value == {"written": 0, "stale": ["p1"]}
    assert farm.intervals() == before


# Through the API


async def test_the_report_over_the_api_and_who_may_read_it(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/printers", json={"id": "p1", "group": "west"})
            ).status_code == 201
    response = await api.get("/api/v1/utilization", params={"group": "west"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["printer_id"] for p in body["printers"]] == ["p1"]
    assert body["group"] == "west" and body["total"]["printers"] == 1
    assert body["printers"][0]["hours"]["offline"] > 0  # created moments ago, never polled
    user = await make_user(api, "student")
    assert (await api.get("/api/v1/utilization", headers=user)).status_code == 200
    assert (await api.get("/api/v1/utilization", headers={"Authorization": ""})
            ).status_code == 401
    # Both spellings of a time, and the window as asked.
    got = (await api.get("/api/v1/utilization", params={
        "from": "2024-01-01T00:00:00Z", "to": "1704110400"})).json()
    assert (got["from"], got["to"]) == ("2024-01-01T00:00:00Z", "2024-01-01T12:00:00Z")


@pytest.mark.parametrize(("params", "code", "field"), [
    ({"from": "yesterday"}, "invalid_input", "from"),
    ({"to": "2024-02-30T00:00:00"}, "invalid_input", "to"),
    ({"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "invalid_window", "to"),
    ({"from": "1700000000", "to": "1700000000"}, "invalid_window", "to"),
    ({"from": "2023-01-01T00:00:00Z", "to": "2024-01-03T00:00:00Z"}, "window_too_long",
     "from"),
    ({"from": "-5"}, "invalid_time", "from"),
    ({"to": "9999-12-31T23:59:59-23:59"}, "invalid_time", "to"),
    ({"group": "x" * 201}, "invalid_input", "group"),
    ({"group": "a\x01b"}, "invalid_input", "group"),
])
async def test_bad_parameters_are_a_clear_422(api: httpx.AsyncClient, params: dict[str, str],
                                              code: str, field: str) -> None:
    response = await api.get("/api/v1/utilization", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


async def test_mock_printers_printing_and_idle_are_measured(tmp_path: Path) -> None:
    async with running_farm(tmp_path, mock_printer_job_time=20) as (node, api):
        body = {"id": "pla", "type": "PLA", "color": "black", "total_weight_in_grams": 1000}
        assert (await api.post("/api/v1/filaments", json=body)).status_code == 201
        for name, group in (("m0", "A"), ("m1", "B")):
            printer = {"id": name, "api": "Mock", "url": f"http://mock-{name}:5000",
                       "worker": True, "filament_id": "pla", "group": group}
            assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
        stored = await upload(api)
        job = {"id": "j1", "printer_id": "m0", "filament_id": "pla", "file_id": stored["id"],
               "print_weight_in_grams": 12}
        assert (await api.post("/api/v1/print_jobs", json=job)).status_code == 201

        async def done() -> bool:
            got = (await api.get("/api/v1/print_jobs/j1")).json()
            return bool(got["status"] == "Done")

        await eventually(done, 30, "the mock print to finish")

        async def idle_again() -> bool:
            # The job's end is committed first, the printer's next status a tick later.
            return (await _states(node, "m0"))[-1] == "idle"

        await eventually(idle_again, 10, "the printer's finished status to be committed")
        got = (await api.get("/api/v1/utilization")).json()
        printers = {p["printer_id"]: p for p in got["printers"]}
        m0, m1 = printers["m0"], printers["m1"]
        assert m0["jobs"] == {"done": 1, "failed": 0, "rejected": 0, "canceled": 0}
        assert m0["filament_grams"] == 12
        assert m0["hours"]["printing"] > 0 and m1["hours"]["printing"] == 0
        assert m1["hours"]["idle"] > 0
        # The printing stretch matches the job's run as its history recorded it (both ends
        # seen by the same worker, each within a tick and a commit).
        history = (await api.get("/api/v1/print_jobs/j1/history")).json()
        ran = _seconds(history[-1]["at"]) - _seconds(history[-2]["at"])
        assert m0["hours"]["printing"] * 3600 == pytest.approx(ran, abs=2.0)
        states = await _states(node, "m0")
        assert "printing" in states and states[-1] == "idle"
        groups = {g["group"]: g for g in got["groups"]}
        assert groups["A"]["jobs"]["done"] == 1 and groups["B"]["jobs"]["done"] == 0


def _seconds(moment: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(moment).timestamp()


async def _states(node: FarmNode, printer_id: str) -> list[str]:
    iv = printer_state_intervals.c
    return await node.read(lambda c: [r[0] for r in c.execute(
        printer_state_intervals.select().with_only_columns(iv.state)
        .where(iv.printer_id == printer_id).order_by(iv.seq))])
