"""No command can stop the log: apply never raises, request memory is exact for any id."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from mes.state import queries
from mes.state.machine import HANDLERS, StateMachine, command_fingerprint, request_key
from mes.state.ops import Op
from mes.state.tables import applied_requests, print_jobs
from tests.examples import examples


def _seeded() -> StateMachine:
    machine = StateMachine()
    machine.apply({"op": Op.PRINTER_CREATE, "args": {"id": "p1"}, "ts": 1.0, "rid": "s1"})
    machine.apply({"op": Op.FILAMENT_CREATE, "args": {
        "id": "f1", "type": "PLA", "color": "red", "total_weight_in_grams": 1000},
        "ts": 2.0, "rid": "s2"})
    return machine


def _job_count(machine: StateMachine) -> int:
    return machine.read(lambda c: c.execute(select(func.count()).select_from(print_jobs))
                        .scalar_one())


def test_a_repeated_long_request_id_is_recognised() -> None:
    # The review's reproduction: the request id is the op, a 130-character target and the
    # key; it was stored cut to 128 characters and looked up whole.
    machine = _seeded()
    rid = f"job.set_status:{'j' * 130}:retry-1"
    command = {"op": Op.JOB_SET_STATUS, "args": {"id": "j" * 130, "status": "running"},
               "ts": 3.0, "rid": rid}
    first = machine.apply(command)
    second = machine.apply(command)
    assert first.error is not None and first.error["kind"] in ("not_found", "invalid")
    assert second.replayed and second.error == first.error
    created = machine.apply({"op": Op.JOB_CREATE, "args": {
        "id": "j1", "printer_id": "p1", "filament_id": "f1", "filepath": "a.gcode",
        "print_weight_in_grams": 5}, "ts": 4.0, "rid": "x" * 500})
    assert created.ok
    again = machine.apply({"op": Op.JOB_CREATE, "args": {
        "id": "j1", "printer_id": "p1", "filament_id": "f1", "filepath": "a.gcode",
        "print_weight_in_grams": 5}, "ts": 5.0, "rid": "x" * 500})
    assert again.replayed and again.ok and _job_count(machine) == 1


def test_request_keys_are_exact_and_bounded() -> None:
    assert request_key("retry-1") == "retry-1"
    assert request_key(None) is None and request_key("") is None and request_key(7) is None
    long_a, long_b = "a" * 129 + "1", "a" * 129 + "2"  # equal in their first 128 characters
    assert request_key(long_a) != request_key(long_b)
    for rid in (long_a, "ключ", "\ud800", "a b", "x" * 10_000):
        key = request_key(rid)
        assert key is not None and len(key) <= 128 and key.isascii()
        assert key == request_key(rid)


def test_a_failing_listener_does_not_escape_apply() -> None:
    machine = _seeded()

    def broken(command: Any, outcome: Any) -> None:
        raise RuntimeError("listener bug")

    machine.add_listener(broken)
    outcome = machine.apply({"op": Op.PRINTER_CREATE, "args": {"id": "p2"}, "ts": 3.0})
    assert outcome.ok


def test_a_failing_request_memory_rejects_without_raising() -> None:
    # Even when the request memory itself fails (here: its table is gone), apply answers a
    # rejection, changes nothing, and the next command applies.
    machine = _seeded()

    writer = machine._conn  # white box: break the applying connection's request memory
    writer.execute(text("DROP TABLE applied_requests"))
    writer.commit()
    outcome = machine.apply({"op": Op.PRINTER_CREATE, "args": {"id": "p2"}, "ts": 3.0,
                             "rid": "r-9"})
    assert outcome.error is not None and outcome.error["code"] == "apply_failed"
    assert machine.read(lambda c: queries.get_printer(c, "p2")) is None
    later = machine.apply({"op": Op.PRINTER_CREATE, "args": {"id": "p3"}, "ts": 4.0})
    assert later.ok


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=8)
RIDS = st.one_of(st.none(), st.text(max_size=300), st.integers(), st.just("x" * 129),
                 st.sampled_from(["retry-1", "retry-2"]))
OPS = st.sampled_from(sorted(HANDLERS)) | st.text(max_size=10)
ARGS = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=140) | st.sampled_from(["p1", "f1", "j1"]),
    "printer_id": st.sampled_from(["p1", "nope"]) | ANY_JSON,
    "filament_id": st.sampled_from(["f1", "nope"]) | ANY_JSON,
    "print_weight_in_grams": st.integers(-5, 2000) | ANY_JSON,
    "status": st.sampled_from(["running", "done", "canceled", "Queued"]) | ANY_JSON,
    "filepath": st.text(max_size=30),
    "type": st.sampled_from(["PLA", "ABS"]) | ANY_JSON,
    "epoch": ANY_JSON,
}) | ANY_JSON


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(OPS, ARGS, RIDS, ANY_JSON), min_size=1, max_size=30))
def test_random_commands_never_stop_the_log(
        commands: list[tuple[str, Any, Any, Any]]) -> None:
    machine = _seeded()
    seen: dict[str, Any] = {}
    for n, (op, args, rid, extra) in enumerate(commands):
        command = {"op": op, "args": args, "ts": 10.0 + n, "rid": rid, "extra": extra}
        outcome = machine.apply(command)  # must never raise
        key = request_key(rid)
        if key is not None:
            fingerprint = command_fingerprint(command)
            if key not in seen:
                seen[key] = (fingerprint, outcome.value, outcome.error)
            elif seen[key][0] in (None, fingerprint):
                assert outcome.replayed and (outcome.value, outcome.error) == seen[key][1:]
            else:
                assert outcome.error is not None
                assert outcome.error["code"] == "idempotency_key_reused"
    # the log goes on: an ordinary command still applies, and every key is remembered once
    assert machine.apply({"op": Op.PRINTER_CREATE, "args": {"id": "after"}, "ts": 99.0}).ok
    stored = machine.read(lambda c: c.execute(select(func.count()).select_from(
        applied_requests)).scalar_one())
    assert stored == len(seen) + 2  # the two seeding commands


async def test_the_api_reproduction_then_commits(api: httpx.AsyncClient) -> None:
    long_id = "j" * 130
    answers = [await api.post(f"/api/v1/print_jobs/{long_id}/status",
                              params={"status": "running"},
                              headers={"Idempotency-Key": "retry-1"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [422, 422]  # the id is longer than 64
    assert answers[0].json() == answers[1].json()
    created = await api.post("/api/v1/printers", json={"id": "after"},
                             headers={"Idempotency-Key": "k" * 100})
    assert created.status_code == 201
    repeat = await api.post("/api/v1/printers", json={"id": "after"},
                            headers={"Idempotency-Key": "k" * 100})
    assert repeat.status_code == 201 and repeat.json() == created.json()


@pytest.mark.parametrize("key", ["k" * 101, "a b", "ключ".encode(), "tab\there"])
async def test_bad_idempotency_keys_are_refused_at_the_edge(api: httpx.AsyncClient,
                                                            key: str | bytes) -> None:
    response = await api.post("/api/v1/printers", json={"id": "p-key"},
                              headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "idempotency-key"
    assert (await api.get("/api/v1/printers/p-key")).status_code == 404


KEYS = st.one_of(st.none(), st.binary(min_size=1, max_size=150),
                 st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                         max_size=130))
PATH_IDS = st.text(min_size=1, max_size=200).map(lambda s: quote(s, safe=""))


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["status", "pause", "resume", "create"]), PATH_IDS,
                          KEYS), min_size=1, max_size=6))
async def test_random_ids_and_keys_at_the_api_never_stop_the_log(
        api: httpx.AsyncClient, requests: list[tuple[str, str, bytes | str | None]]) -> None:
    for action, ident, key in requests:
        headers = {} if key is None else {"Idempotency-Key": key}
        for _ in range(2):  # every request repeated, as a retrying client would
            if action == "create":
                response = await api.post("/api/v1/printers", json={"id": unquote(ident)},
                                          headers=headers)
            else:
                response = await api.post(f"/api/v1/print_jobs/{ident}/{action}",
                                          params={"status": "running"}, headers=headers)
            assert response.status_code < 500, response.text
    probe = f"probe-{len(requests)}-{abs(hash(str(requests))) % 10**9}"
    created = await api.post("/api/v1/printers", json={"id": probe})
    assert created.status_code == 201, created.text
