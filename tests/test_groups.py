"""Printer groups renamed or dissolved in one command (group.rename, level 7): every printer
of the group moves at once; a refused rename changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mes.node import FarmNode
from tests.accounts import make_user
from tests.farm_helpers import raise_to_data_level


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def printers_in(api: httpx.AsyncClient) -> dict[str, str | None]:
    return {p["id"]: p["group"] for p in await ok(await api.get("/api/v1/printers"))}


@pytest.fixture
async def grouped(api: httpx.AsyncClient, node: FarmNode) -> httpx.AsyncClient:
    for printer_id, group in (("a1", "Lab A"), ("a2", "Lab A"), ("b1", "Lab B"), ("c1", None)):
        await ok(await api.post("/api/v1/printers", json={"id": printer_id, "group": group}),
                 201)
    return api


async def test_a_group_is_renamed_then_dissolved_at_once(grouped: httpx.AsyncClient,
                                                         node: FarmNode) -> None:
    api = grouped
    assert await ok(await api.get("/api/v1/groups")) == [
        {"group": "Lab A", "printers": 2}, {"group": "Lab B", "printers": 1}]
    refused = await api.post("/api/v1/groups/rename", json={"group": "Lab A", "to": "Room 1"})
    assert refused.status_code == 409, refused.text  # a node of 0.6.0 would not know it
    assert refused.json()["error"]["code"] == "cluster_not_upgraded"
    await raise_to_data_level(node)
    staff = await make_user(api, "staff", role="operator")
    renamed = await ok(await api.post("/api/v1/groups/rename", headers=staff,
                                      json={"group": "Lab A", "to": "Room 1"}))
    assert renamed == {"group": "Lab A", "to": "Room 1", "printers": ["a1", "a2"]}
    assert await printers_in(api) == {"a1": "Room 1", "a2": "Room 1", "b1": "Lab B",
                                      "c1": None}
    # Into an existing group: the groups merge.
    await ok(await api.post("/api/v1/groups/rename", json={"group": "Lab B", "to": "Room 1"}))
    assert await ok(await api.get("/api/v1/groups")) == [{"group": "Room 1", "printers": 3}]
    dissolved = await ok(await api.post("/api/v1/groups/rename",
                                        json={"group": "Room 1", "to": None}))
    assert dissolved["printers"] == ["a1", "a2", "b1"]
    assert set((await printers_in(api)).values()) == {None}
    assert await ok(await api.get("/api/v1/groups")) == []


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"group": "Nowhere", "to": "X"}, 404, "group_not_found"),
    ({"group": "Lab A", "to": "Lab A"}, 422, "same_group"),
    ({"group": "Lab A", "to": " "}, 422, "invalid_input"),
    ({"group": "Lab A"}, 422, "invalid_input"),
    ({"group": "", "to": "X"}, 422, "invalid_input"),
    ({"group": "Lab A", "to": "x" * 201}, 422, "invalid_input"),
    ({"group": "Lab A", "to": "bell\x07"}, 422, "invalid_input"),
])
async def test_a_refused_rename_changes_nothing(grouped: httpx.AsyncClient, node: FarmNode,
                                                body: dict[str, Any], status: int,
                                                code: str) -> None:
    await raise_to_data_level(node)
    before = await printers_in(grouped)
    response = await grouped.post("/api/v1/groups/rename", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert await printers_in(grouped) == before


async def test_users_list_groups_but_cannot_rename_them(grouped: httpx.AsyncClient,
                                                        node: FarmNode) -> None:
    await raise_to_data_level(node)
    student = await make_user(grouped, "student")
    assert len(await ok(await grouped.get("/api/v1/groups", headers=student))) == 2
    refused = await grouped.post("/api/v1/groups/rename", headers=student,
                                 json={"group": "Lab A", "to": "Mine"})
    assert refused.status_code == 403
    assert (await printers_in(grouped))["a1"] == "Lab A"
