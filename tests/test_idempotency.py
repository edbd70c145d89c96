"""Idempotency-Key: a retry applies once; a key reused for another request is refused."""

from __future__ import annotations

import httpx

from mes.state.machine import StateMachine
from mes.state.ops import Op
from tests.test_api import assert_error

SPOOL = {"type": "PLA", "color": "black", "total_weight_in_grams": 1000}


async def test_a_retried_create_without_an_id_makes_one_entity(api: httpx.AsyncClient) -> None:
    answers = [await api.post("/api/v1/filaments", json=SPOOL,
                              headers={"Idempotency-Key": "spool-order-17"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    listed = (await api.get("/api/v1/filaments")).json()
    items = listed if isinstance(listed, list) else listed["items"]
    assert len(items) == 1


async def test_a_key_reused_with_another_body_is_refused(api: httpx.AsyncClient) -> None:
    first = await api.post("/api/v1/filaments", json=SPOOL,
                           headers={"Idempotency-Key": "order-1"})
    assert first.status_code == 201
    other = await api.post("/api/v1/filaments", json={**SPOOL, "color": "red"},
                           headers={"Idempotency-Key": "order-1"})
    assert_error(other, 422, "idempotency_key_reused", "idempotency-key")
    assert "order-1" in other.json()["error"]["message"]
    spool = (await api.get(f"/api/v1/filaments/{first.json()['id']}")).json()
    assert spool["color"] == "black"
    # the key still answers its own request
    again = await api.post("/api/v1/filaments", json=SPOOL, headers={"Idempotency-Key": "order-1"})
    assert again.status_code == 201 and again.json() == first.json()


def test_the_state_machine_refuses_a_reused_request_id() -> None:
    machine = StateMachine()
    create = {"op": Op.PRINTER_CREATE, "args": {"id": "p1", "model": "MK4"}, "ts": 1.0,
              "rid": "k"}
    assert machine.apply(create).ok
    changed = {**create, "args": {"id": "p1", "model": "XL"}, "ts": 2.0}
    refused = machine.apply(changed)
    assert refused.error is not None and refused.error["code"] == "idempotency_key_reused"
    assert not refused.replayed
    assert machine.apply({**create, "ts": 3.0}).replayed
