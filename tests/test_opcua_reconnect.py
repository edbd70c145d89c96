"""A subscribed OPC UA client keeps getting values through a restart of its node (issue 21
§1), with node-opcua (an independent client stack) and its own reconnection.

After the restart the server no longer holds the session, the subscription or its
messages. node-opcua reconnects, makes a new session and subscription, and asks for the
messages it missed (Republish). asyncua 2.1 answered Good with an empty message, so the
client asked again about 40 times a second and never received data; the server now answers
Bad_MessageNotAvailable / Bad_SubscriptionIdInvalid (Part 4) and notifications resume.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, ServerProcess
from tests.node_opcua import StreamingClient
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
WEIGHT = f"nsu={FARM_URI};s=Filaments/s1/RemainingWeight"
# What the client waits for: written only after the restart.
AFTER_RESTART = 777.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    made = Cluster(1, tmp_path / "single", OPCUA_ENABLED="true", OPCUA_ALLOW_ANONYMOUS="true")
    try:
        yield made.start().nodes[0]
    finally:
        made.stop()


def set_weight(node: ServerProcess, grams: int) -> None:
    response = node.client.patch("/filaments/s1", json={"remaining_weight_in_grams": grams})
    assert response.status_code == 200, response.text


def test_node_opcua_gets_values_again_after_its_node_restarts(node: ServerProcess) -> None:
    created = node.client.post("/filaments", json={
        "id": "s1", "type": "PLA", "color": "red", "total_weight_in_grams": 1000})
    assert created.status_code == 201, created.text
    wait_for(node.opcua_ready, 90, "the OPC UA address space")
    client = StreamingClient({
        "endpoint": node.opcua_url, "connectRetries": 1000,
        "steps": [{"op": "subscribe", "name": "weight", "nodes": [WEIGHT],
                   "publishingInterval": 100, "history": 50, "timeout": 60,
                   "until": [{"index": 0, "eq": AFTER_RESTART}]}]}, timeout=80)
    try:
        client.wait_subscribed()
        set_weight(node, 900)  # seen before the restart (and acknowledged or not)
        node.stop()
        node.start()
        wait_for(node.healthy, 90, "the restarted node to be ready")
        wait_for(node.opcua_ready, 90, "the restarted node's address space")
        set_weight(node, int(AFTER_RESTART))
        result = client.result()
    finally:
        client.close()
    assert result["ok"], result
    step = result["steps"][0]
    assert step["met"], json.dumps(step)[:3000]
    assert step["latest"][0]["value"] == AFTER_RESTART, step
    seen = step["history"][0]
    assert seen[0] == 1000.0 and seen[-1] == AFTER_RESTART, seen
