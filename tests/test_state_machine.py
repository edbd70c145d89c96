"""The state machine alone: rules, atomicity, idempotency, snapshots; no Raft, no HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from mes.state import queries
from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op
from mes.state.tables import filaments, job_history, print_jobs
from tests.examples import examples
from tests.shard_helpers import OTHER, place


class Farm:
    """A state machine with a command counter standing in for the submitting node's clock."""

    def __init__(self) -> None:
        self.machine = StateMachine()
        self.ts = 1_000.0

    def do(self, op: str, rid: str | None = None, **args: Any) -> Outcome:
        self.ts += 1
        return self.machine.apply({"op": op, "args": args, "ts": self.ts, "rid": rid})

    def dump(self) -> bytes:
        return self.machine.snapshot()


@pytest.fixture
def farm() -> Farm:
    f = Farm()
    assert f.do(Op.PRINTER_CREATE, id="p1", company="Prusa", model="MK4").ok
    assert f.do(Op.FILAMENT_CREATE, id="f1", type="PLA", color="red",
                total_weight_in_grams=1000).ok
    return f


def job(farm: Farm, job_id: str, grams: int) -> Outcome:
    return farm.do(Op.JOB_CREATE, id=job_id, printer_id="p1", filament_id="f1",
                   filepath=f"{job_id}.gcode", print_weight_in_grams=grams)


def test_job_weight_may_not_exceed_free_filament(farm: Farm) -> None:
    assert job(farm, "j1", 600).value["status"] == "Queued"
    rejected = job(farm, "j2", 401)
    assert rejected.error is not None
    assert rejected.error["code"] == "insufficient_filament"
    assert rejected.error["field"] == "print_weight_in_grams"
    assert job(farm, "j2", 400).ok


def test_done_charges_the_spool_and_frees_the_reservation(farm: Farm) -> None:
    job(farm, "j1", 250)
    assert farm.do(Op.JOB_SET_STATUS, id="j1", status="running").value["status"] == "Running"
    assert farm.do(Op.JOB_SET_STATUS, id="j1", status="DONE").value["status"] == "Done"
    spool = farm.machine.read(lambda c: queries.get_filament(c, "f1"))
    assert spool is not None
    assert spool["remaining_weight_in_grams"] == 750
    assert spool["reserved_weight_in_grams"] == 0


def test_canceled_job_releases_weight_without_charging(farm: Farm) -> None:
    job(farm, "j1", 1000)
    assert not job(farm, "j2", 1).ok
    assert farm.do(Op.JOB_SET_STATUS, id="j1", status="canceled").ok
    assert job(farm, "j2", 1000).ok
    spool = farm.machine.read(lambda c: queries.get_filament(c, "f1"))
    assert spool is not None and spool["remaining_weight_in_grams"] == 1000


@pytest.mark.parametrize(
    ("path", "target", "allowed"),
    [
        ((), "Running", True),
        ((), "Done", False),
        ((), "Canceled", True),
        (("Running",), "Done", True),
        (("Running",), "Canceled", True),
        (("Running",), "Running", False),
        (("Running", "Done"), "Canceled", False),
        (("Running", "Done"), "Running", False),
        (("Canceled",), "Running", False),
        (("Canceled",), "Done", False),
    ],
)
def test_status_transitions(farm: Farm, path: tuple[str, ...], target: str, allowed: bool) -> None:
    job(farm, "j1", 10)
    for step in path:
        assert farm.do(Op.JOB_SET_STATUS, id="j1", status=step).ok
    before = farm.dump()
    outcome = farm.do(Op.JOB_SET_STATUS, id="j1", status=target)
    assert outcome.ok is allowed
    if not allowed:
        assert outcome.error is not None and outcome.error["code"] == "invalid_transition"
        assert farm.dump() == before


def test_status_cannot_be_set_at_creation(farm: Farm) -> None:
    outcome = farm.do(Op.JOB_CREATE, id="j1", printer_id="p1", filament_id="f1",
                      filepath="a.gcode", print_weight_in_grams=1, status="Done")
    assert outcome.error is not None and outcome.error["field"] == "status"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"printer_id": "nope"}, "printer_not_found"),
        ({"filament_id": "nope"}, "filament_not_found"),
        ({"print_weight_in_grams": 0}, "out_of_range"),
        ({"print_weight_in_grams": -5}, "out_of_range"),
        ({"print_weight_in_grams": 10**12}, "out_of_range"),
        ({"print_weight_in_grams": "10"}, "invalid_type"),
        ({"print_weight_in_grams": True}, "invalid_type"),
        ({"filepath": "x" * 2000}, "too_long"),
        ({"filepath": ""}, "empty_field"),
        ({"id": "../etc"}, "invalid_id"),
        ({"surprise": 1}, "unknown_field"),
    ],
)
def test_rejected_job_changes_nothing(farm: Farm, args: dict[str, Any], code: str) -> None:
    before = farm.dump()
    full = {"id": "j1", "printer_id": "p1", "filament_id": "f1", "filepath": "a.gcode",
            "print_weight_in_grams": 10, **args}
    outcome = farm.do(Op.JOB_CREATE, **full)
    assert outcome.error is not None and outcome.error["code"] == code
    assert farm.dump() == before


def test_malformed_commands_are_rejected(farm: Farm) -> None:
    before = farm.dump()
    for command in ({"op": "bogus", "args": {}, "ts": 1.0}, {"op": Op.NOOP, "args": {}},
                    {"op": Op.PRINTER_CREATE, "args": [], "ts": 1.0}, "not a mapping"):
        outcome = farm.machine.apply(command)  # type: ignore[arg-type]
        assert outcome.error is not None and outcome.error["kind"] == "invalid"
    assert farm.dump() == before


def test_delete_refused_while_jobs_need_printer_or_spool(farm: Farm) -> None:
    job(farm, "j1", 10)
    assert farm.do(Op.PRINTER_DELETE, id="p1").error["code"] == "printer_in_use"  # type: ignore[index]
    assert farm.do(Op.FILAMENT_DELETE, id="f1").error["code"] == "filament_in_use"  # type: ignore[index]
    farm.do(Op.JOB_SET_STATUS, id="j1", status="canceled")
    assert farm.do(Op.FILAMENT_DELETE, id="f1").ok
    assert farm.do(Op.PRINTER_DELETE, id="p1").ok
    assert farm.machine.read(queries.list_printers) == []


def test_filament_update_keeps_weights_consistent(farm: Farm) -> None:
    job(farm, "j1", 300)
    assert farm.do(Op.FILAMENT_UPDATE, id="f1", remaining_weight_in_grams=299).error is not None
    assert farm.do(Op.FILAMENT_UPDATE, id="f1", total_weight_in_grams=200).error is not None
    assert farm.do(Op.FILAMENT_UPDATE, id="f1", remaining_weight_in_grams=300).ok


def test_opcua_name_is_unique(farm: Farm) -> None:
    assert farm.do(Op.PRINTER_UPDATE, id="p1", opcua_name="Printer1").ok
    outcome = farm.do(Op.PRINTER_CREATE, id="p2", opcua_name="Printer1")
    assert outcome.error is not None and outcome.error["code"] == "opcua_name_taken"


def test_api_key_is_never_read_back(farm: Farm) -> None:
    created = farm.do(Op.PRINTER_CREATE, id="p2", api="octoprint", url="http://127.0.0.1:5000",
                      api_key="SECRET123").value
    assert created["api"] == "OctoPrint"
    assert created["has_api_key"] is True
    assert "SECRET123" not in repr(farm.machine.read(queries.list_printers))


def test_retried_request_is_applied_once(farm: Farm) -> None:
    first = job(farm, "j1", 10)
    again = farm.do(Op.JOB_SET_STATUS, rid="r-1", id="j1", status="running")
    replay = farm.do(Op.JOB_SET_STATUS, rid="r-1", id="j1", status="running")
    assert again.ok and replay.ok and replay.replayed
    assert replay.value == again.value
    history = farm.machine.read(lambda c: queries.job_history_of(c, "j1"))
    assert [h["to_status"] for h in history] == ["Queued", "Running"]
    assert first.ok


def test_snapshot_restores_exact_state(farm: Farm) -> None:
    job(farm, "j1", 10)
    image = farm.dump()
    other = StateMachine()
    other.restore(image)
    assert _entities(other) == _entities(farm.machine)
    assert other.read(lambda c: queries.get_job(c, "j1"))["status"] == "Queued"  # type: ignore[index]


def test_apply_is_deterministic() -> None:
    commands = [
        {"op": Op.PRINTER_CREATE, "args": {"id": "p"}, "ts": 5.0, "rid": "a"},
        {"op": Op.FILAMENT_CREATE, "args": {"id": "f", "type": "ABS", "color": "k",
                                           "total_weight_in_grams": 50}, "ts": 6.0, "rid": "b"},
        {"op": Op.JOB_CREATE, "args": {"id": "j", "printer_id": "p", "filament_id": "f",
                                      "filepath": "x", "print_weight_in_grams": 60},
         "ts": 7.0, "rid": "c"},
    ]
    images = []
    for _ in range(2):
        machine = StateMachine()
        for command in commands:
            machine.apply(command)
        images.append(machine.snapshot())
    assert images[0] == images[1]


# --- property: random command sequences never break the invariants -------------------------

IDS = st.sampled_from(["a", "b", "c"])
COMMANDS = st.one_of(
    st.builds(lambda i: (Op.PRINTER_CREATE, {"id": i}), IDS),
    st.builds(lambda i: (Op.PRINTER_DELETE, {"id": i}), IDS),
    st.builds(lambda i, t, r: (Op.FILAMENT_CREATE, {"id": i, "type": "PLA", "color": "x",
                                                   "total_weight_in_grams": t,
                                                   "remaining_weight_in_grams": r}),
              IDS, st.integers(1, 500), st.integers(0, 500)),
    st.builds(lambda i, r: (Op.FILAMENT_UPDATE, {"id": i, "remaining_weight_in_grams": r}),
              IDS, st.integers(-5, 600)),
    st.builds(lambda i: (Op.FILAMENT_DELETE, {"id": i}), IDS),
    st.builds(lambda j, p, f, w: (Op.JOB_CREATE, {"id": j, "printer_id": p, "filament_id": f,
                                                 "filepath": "x.gcode",
                                                 "print_weight_in_grams": w}),
              st.sampled_from([f"j{n}" for n in range(8)]), IDS, IDS, st.integers(-1, 300)),
    st.builds(lambda j, s: (Op.JOB_SET_STATUS, {"id": j, "status": s}),
              st.sampled_from([f"j{n}" for n in range(8)]),
              st.sampled_from(["Queued", "Running", "Done", "Canceled", "bogus"])),
)


def check_invariants(machine: StateMachine, applied_changes: int) -> None:
    def load(conn: Any) -> tuple[Any, Any, int, int]:
        spools = conn.execute(select(filaments)).all()
        reserved = dict(conn.execute(
            select(print_jobs.c.filament_id, func.sum(print_jobs.c.print_weight_in_grams))
            .where(print_jobs.c.status.in_(("Queued", "Running")))
            .group_by(print_jobs.c.filament_id)).all())
        history = conn.execute(select(func.count()).select_from(job_history)).scalar_one()
        return spools, reserved, history, 0

    spools, reserved, history, _ = machine.read(load)
    for spool in spools:
        assert spool.remaining_weight_in_grams >= 0
        assert spool.remaining_weight_in_grams <= spool.total_weight_in_grams
        assert spool.reserved_weight_in_grams == reserved.get(spool.id, 0)
        assert spool.reserved_weight_in_grams <= spool.remaining_weight_in_grams
    assert history == applied_changes


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(COMMANDS, min_size=1, max_size=40))
def test_random_commands_keep_invariants(commands: list[tuple[str, dict[str, Any]]]) -> None:
    machine = StateMachine()
    status_changes = 0
    for n, (op, args) in enumerate(commands):
        before = machine.snapshot()
        outcome = machine.apply({"op": op, "args": args, "ts": float(n), "rid": f"r{n}"})
        if outcome.ok and op in (Op.JOB_CREATE, Op.JOB_SET_STATUS):
            status_changes += 1
        if not outcome.ok:
            # only the request memory may differ from before
            after = StateMachine()
            after.restore(before)
            assert _entities(after) == _entities(machine)
        check_invariants(machine, status_changes)


def _entities(machine: StateMachine) -> tuple[Any, ...]:
    return (machine.read(queries.list_printers), machine.read(queries.list_filaments),
            machine.read(queries.list_jobs))


def test_unexpected_errors_reject_the_command_and_the_log_goes_on(farm: Farm) -> None:
    before = farm.dump()
    # a lone surrogate cannot be stored in SQLite: rejected by the argument check
    outcome = farm.do(Op.PRINTER_CREATE, id="p9", model="\ud800")
    assert outcome.error is not None and outcome.error["code"] == "invalid_text"
    # whatever else goes wrong inside a handler rejects that command only
    from mes.state import commands

    def broken(ctx: Any, args: Any) -> None:
        raise UnicodeEncodeError("utf-8", "x", 0, 1, "surprise")

    commands.COMMANDS["test.broken"] = commands.Command(
        commands.Op.NOOP, {1: commands.Format(broken)})
    try:
        failed = farm.do("test.broken")
        assert failed.error is not None and failed.error["code"] == "apply_failed"
    finally:
        del commands.COMMANDS["test.broken"]
    assert farm.dump() == before
    assert farm.do(Op.PRINTER_CREATE, id="p9", model="fine").ok


def _claimed(farm: Farm) -> int:
    sha = "c" * 64
    assert farm.do(Op.FILE_REGISTER, id=sha, name="a.gcode", size=10).ok
    assert farm.do(Op.PRINTER_UPDATE, id="p1", api="Mock", worker=True, filament_id="f1").ok
    epoch = place(farm.machine, "p1")
    assert farm.do(Op.JOB_CREATE, id="j1", filament_id="f1", file_id=sha,
                   print_weight_in_grams=5).ok
    claim = farm.do(Op.JOB_CLAIM, epoch=epoch, job_id="j1", printer_id="p1",
                    printer_filename="mes-j1.gcode")
    assert claim.ok and claim.value["phase"] == "starting"
    return int(epoch)


def test_a_job_being_started_by_its_worker_cannot_be_set_running_by_hand(farm: Farm) -> None:
    _claimed(farm)
    refused = farm.do(Op.JOB_SET_STATUS, id="j1", status="running")
    assert refused.error is not None and refused.error["code"] == "worker_starting"


def test_commands_of_an_older_assignment_epoch_are_fenced_off(farm: Farm) -> None:
    old = _claimed(farm)
    place(farm.machine, "p1", OTHER)  # the printer moved to another node
    stale = farm.do(Op.JOB_STARTED, epoch=old, job_id="j1", printer_id="p1")
    assert stale.error is not None and stale.error["code"] == "stale_epoch"
    job = farm.machine.read(lambda c: queries.get_job(c, "j1"))
    assert job is not None and job["status"] == "Queued"


def test_one_bad_telemetry_item_does_not_block_the_others(farm: Farm) -> None:
    farm.do(Op.PRINTER_CREATE, id="p2")
    first, second = place(farm.machine, "p1"), place(farm.machine, "p2")
    outcome = farm.do(Op.PRINTER_TELEMETRY, statuses=[
        {"printer_id": "p1", "epoch": first, "state": "printing", "observed_at": 5.0,
         "nozzle_actual": float("nan")},
        {"printer_id": "p2", "epoch": second, "state": "idle", "observed_at": 5.0,
         "nozzle_actual": 21.5},
        {"printer_id": "ghost", "epoch": second, "state": "idle", "observed_at": 5.0}])
    assert outcome.ok and outcome.value == {"written": 1, "stale": ["ghost"]}
    status = farm.machine.read(lambda c: queries.printer_status_of(c, "p2"))
    assert status is not None and status["nozzle_actual"] == 21.5


def test_a_printer_held_for_attention_takes_no_job_until_an_operator_clears_it(
        farm: Farm) -> None:
    epoch = _claimed(farm)
    assert farm.do(Op.JOB_START_FAILED, epoch=epoch, job_id="j1", printer_id="p1",
                   reason="no show").ok
    held = farm.do(Op.PRINTER_ATTENTION, epoch=epoch, id="p1", reason="cancelled mes-x.gcode")
    assert held.ok and (held.value["attention"], held.value["bed_clear"]) == (
        "cancelled mes-x.gcode", False)
    refused = farm.do(Op.JOB_CLAIM, epoch=epoch, job_id="j1", printer_id="p1",
                      printer_filename="mes-j1.gcode")
    assert refused.error is not None and refused.error["code"] == "bed_not_clear"
    automatic = farm.do(Op.PRINTER_BED_CLEARED, epoch=epoch, id="p1")  # a worker's auto-clear
    assert automatic.error is not None and automatic.error["code"] == "needs_attention"
    stale = farm.do(Op.PRINTER_ATTENTION, epoch=epoch + 100, id="p1", reason="x")
    assert stale.error is not None and stale.error["code"] == "stale_epoch"
    cleared = farm.do(Op.PRINTER_BED_CLEARED, id="p1")  # the operator
    assert cleared.ok and (cleared.value["attention"], cleared.value["bed_clear"]) == (None, True)
    assert farm.do(Op.JOB_CLAIM, epoch=epoch, job_id="j1", printer_id="p1",
                   printer_filename="mes-j1.gcode").ok


def test_sending_a_start_needs_the_current_epoch_and_a_job_still_claimed_there(
        farm: Farm) -> None:
    epoch = _claimed(farm)
    assert farm.do(Op.JOB_SENDING, epoch=epoch, job_id="j1", printer_id="p1").ok
    before = farm.dump()
    assert farm.do(Op.PRINTER_CREATE, id="p2").ok
    second = place(farm.machine, "p2")
    other = farm.do(Op.JOB_SENDING, epoch=second, job_id="j1", printer_id="p2")
    assert other.error is not None and other.error["code"] == "not_starting"
    new = place(farm.machine, "p1", OTHER)  # the printer moved to another node
    stale = farm.do(Op.JOB_SENDING, epoch=epoch, job_id="j1", printer_id="p1")
    assert stale.error is not None and stale.error["code"] == "stale_epoch"
    assert farm.do(Op.JOB_SET_STATUS, id="j1", status="Canceled").ok
    canceled = farm.do(Op.JOB_SENDING, epoch=new, job_id="j1", printer_id="p1")
    assert canceled.error is not None and canceled.error["code"] == "not_starting"
    assert before != farm.dump()  # (the cancel changed it; sending itself changes nothing)
