"""The state machine checks every actor's role and ownership itself, without Raft."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mes.state.machine import Outcome, StateMachine
from mes.state.ops import Op

HASH = "0" * 64
ARGON = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


@pytest.fixture
def machine() -> Iterator[StateMachine]:
    machine = StateMachine()
    yield machine
    machine.close()


def do(machine: StateMachine, op: str, actor: str | None = None, **args: Any) -> Outcome:
    command: dict[str, Any] = {"op": op, "args": args, "ts": 1000.0}
    if actor is not None:
        command["actor"] = actor
    return machine.apply(command)


def seed(machine: StateMachine) -> None:
    assert do(machine, Op.USER_BOOTSTRAP, user_id="admin", name="admin", token_id="t0",
              token_name="bootstrap", token_hash=HASH).value == {
        "created": True, "user_id": "admin", "token_id": "t0"}
    for user_id, role in (("alice", "user"), ("bob", "user"), ("oscar", "operator")):
        assert do(machine, Op.USER_CREATE, "admin", id=user_id, name=user_id, role=role).ok
    assert do(machine, Op.FILAMENT_CREATE, "oscar", id="f1", type="PLA", color="k",
              total_weight_in_grams=100).ok
    assert do(machine, Op.JOB_CREATE, "alice", id="ja", filament_id="f1", filepath="a",
              print_weight_in_grams=1).ok


def code(outcome: Outcome) -> str | None:
    return outcome.error["code"] if outcome.error else None


def test_roles_and_ownership_are_enforced_inside_apply(machine: StateMachine) -> None:
    seed(machine)
    assert code(do(machine, Op.PRINTER_CREATE, "alice", id="p1")) == "forbidden"
    assert code(do(machine, Op.USER_CREATE, "oscar", id="eve", name="eve", role="admin")) == \
        "forbidden"
    assert code(do(machine, Op.JOB_SET_STATUS, "bob", id="ja", status="Canceled")) == \
        "job_not_found"
    assert code(do(machine, Op.JOB_SET_STATUS, "alice", id="ja", status="Running")) == "forbidden"
    assert code(do(machine, Op.JOB_CREATE, "bob", id="jb", filament_id="f1", filepath="b",
                   print_weight_in_grams=1, owner_id="alice")) == "forbidden"
    assert code(do(machine, Op.LEADER_BEGIN, "admin", leader="x")) == "forbidden"
    assert code(do(machine, Op.USER_UPDATE, "alice", id="alice", role="admin")) == "forbidden"
    assert code(do(machine, Op.TOKEN_CREATE, "alice", id="t1", user_id="bob", name="x",
                   token_hash="1" * 64)) == "forbidden"
    assert code(do(machine, Op.USER_UPDATE, "alice", id="alice", password_hash="plain")) == \
        "invalid_format"
    assert do(machine, Op.USER_UPDATE, "alice", id="alice", password_hash=ARGON).ok
    assert do(machine, Op.JOB_SET_STATUS, "alice", id="ja", status="Canceled").ok
    # A disabled actor is refused even with a command the edge let through.
    assert do(machine, Op.USER_UPDATE, "admin", id="bob", disabled=True).ok
    assert code(do(machine, Op.JOB_CREATE, "bob", id="jb", filament_id="f1", filepath="b",
                   print_weight_in_grams=1)) == "account_disabled"
    assert code(do(machine, Op.NOOP, 7)) == "invalid_actor"


def test_bootstrap_happens_once_and_the_last_admin_stays(machine: StateMachine) -> None:
    seed(machine)
    again = do(machine, Op.USER_BOOTSTRAP, user_id="root", name="root", token_id="t9",
               token_name="bootstrap", token_hash="9" * 64)
    assert again.value == {"created": False}
    assert code(do(machine, Op.USER_UPDATE, "admin", id="admin", role="operator")) == \
        "last_admin"
    assert do(machine, Op.USER_UPDATE, "admin", id="oscar", role="admin").ok
    assert do(machine, Op.USER_UPDATE, "oscar", id="admin", disabled=True).ok
    assert code(do(machine, Op.USER_UPDATE, "oscar", id="oscar", disabled=True)) == "last_admin"


def test_order_creation_is_atomic(machine: StateMachine) -> None:
    seed(machine)
    jobs = [{"id": "o1", "filament_id": "f1", "filepath": "a", "print_weight_in_grams": 1},
            {"id": "o2", "filament_id": "f1", "filepath": "a", "print_weight_in_grams": 500}]
    failed = do(machine, Op.ORDER_CREATE, "alice", id="o", jobs=jobs)
    assert failed.error is not None
    assert failed.error["field"] == "jobs.1.print_weight_in_grams"
    before = machine.snapshot()
    assert code(do(machine, Op.ORDER_CREATE, "alice", id="o", jobs=jobs)) == \
        "insufficient_filament"
    assert machine.snapshot() == before
    jobs[1]["print_weight_in_grams"] = 5
    assert do(machine, Op.ORDER_CREATE, "alice", id="o", jobs=jobs).value["job_counts"] == {
        "Queued": 2}
