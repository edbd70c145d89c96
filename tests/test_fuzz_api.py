"""Schema-driven fuzzing of the OpenAPI: no 5xx, and a rejected request changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from mes.api.app import create_app
from mes.config import Settings
from mes.node import FarmNode
from mes.state import queries
from tests.auth import admin_headers
from tests.examples import examples
from tests.farm_helpers import SINGLE_NODE
from tests.polling import wait_for
from tests.ports import free_port


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmNode]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    node = FarmNode(Settings(_env_file=None, data_dir=data_dir,  # type: ignore[call-arg]
                             upload_path=data_dir.parent / "upload",
                             raft_self=f"127.0.0.1:{free_port()}", raft_write_timeout=3.0),
                    tuning=SINGLE_NODE)
    yield node
    node.close()


@pytest.fixture(scope="module")
def fuzz_app(fuzz_node: FarmNode) -> FastAPI:
    app = create_app(fuzz_node)
    # Known ids so that fuzzed requests also reach the rules, not only "not found".
    from fastapi.testclient import TestClient

    with TestClient(app, headers=admin_headers()) as client:
        # The leader makes the admin after the app starts: wait for its token to work (a
        # request before it answered 401 when the election took longer).
        wait_for(lambda: client.get("/api/v1/users/me").status_code == 200, 30,
                 "the admin's token to work")
        assert client.post("/api/v1/printers", json={"id": "p1"}).status_code == 201
        spool = {"id": "f1", "type": "PLA", "color": "red", "total_weight_in_grams": 1000}
        assert client.post("/api/v1/filaments", json=spool).status_code == 201
        job = {"id": "j1", "printer_id": "p1", "filament_id": "f1", "filepath": "a.gcode",
               "print_weight_in_grams": 5}
        assert client.post("/api/v1/print_jobs", json=job).status_code == 201
    return app


def entities(node: FarmNode) -> tuple[Any, ...]:
    return (node.machine.read(queries.list_printers), node.machine.read(queries.list_filaments),
            node.machine.read(queries.list_jobs))


def test_no_server_errors_and_rejections_change_nothing(fuzz_app: FastAPI,
                                                        fuzz_node: FarmNode) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    calls: dict[str, int] = {}

    for operation in operations:
        fuzz_operation(operation, fuzz_node, calls)
    assert all(count > 0 for count in calls.values())
    assert len(calls) == len(operations)


def fuzz_operation(operation: Any, fuzz_node: FarmNode, calls: dict[str, int]) -> None:
    """Run one operation's generated cases (schemathesis' strategy drives Hypothesis)."""
    label = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @settings(max_examples=examples(60), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        before = entities(fuzz_node)
        response = case.call(headers=admin_headers())
        calls[label] = calls.get(label, 0) + 1
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"code", "message", "field"}, label
            assert entities(fuzz_node) == before, f"rejected {label} changed state"

    fuzz()
