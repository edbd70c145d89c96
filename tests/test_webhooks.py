"""Webhooks and e-mail on one node: signed deliveries, retries with backoff, giving up,
filters, URL checks, and a job owner's e-mail when a mock print finishes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from mes.node import FarmNode
from tests.accounts import make_user
from tests.farm_helpers import eventually, running_farm, upload_as
from tests.ports import free_port
from tests.webhook_receiver import signature_valid, webhook_receiver

FAST = {"notify_interval": 0.05, "webhook_retry_base": 0.05, "webhook_retry_cap": 0.2,
        "webhook_timeout": 5.0, "auto_schedule": False}


@pytest.fixture
async def farm(tmp_path: Path, request: pytest.FixtureRequest
               ) -> AsyncIterator[tuple[FarmNode, httpx.AsyncClient]]:
    async with running_farm(tmp_path, **{**FAST, **getattr(request, "param", {})}) as pair:
        yield pair


async def spool_and_job(api: httpx.AsyncClient, job_id: str, **extra: Any) -> None:
    if (await api.get("/api/v1/filaments/s")).status_code == 404:
        response = await api.post("/api/v1/filaments", json={
            "id": "s", "type": "PLA", "color": "red", "total_weight_in_grams": 1000})
        assert response.status_code == 201, response.text
    response = await api.post("/api/v1/print_jobs", json={
        "id": job_id, "filament_id": "s", "filepath": "parts/bracket.gcode",
        "print_weight_in_grams": 1, **extra})
    assert response.status_code == 201, response.text


async def deliveries(api: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


async def test_each_event_arrives_signed_once_and_is_marked_done(
        farm: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, api = farm
    with webhook_receiver() as receiver:
        created = await api.post("/api/v1/webhooks", json={
            "url": f"{receiver.url}/hook?token=abc", "types": ["job.created", "job.canceled"],
            "description": "line controller"})
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_")
        only_p1 = (await api.post("/api/v1/webhooks", json={
            "url": f"{receiver.url}/p1", "types": ["*"], "printer_ids": ["p1"]})).json()
        await spool_and_job(api, "j1")
        assert (await api.post("/api/v1/print_jobs/j1/status",
                               params={"status": "canceled"})).status_code == 200

        async def both_done() -> list[dict[str, Any]] | None:
            rows = await deliveries(api, hook["id"])
            return rows if len(rows) == 2 and all(r["status"] == "done" for r in rows) else None

        rows = await eventually(both_done, 60, "two deliveries done")  # "never", not "slowly"
        posts = receiver.posts()
        assert len(posts) == 2  # once each: nothing failed
        assert all(signature_valid(hook["secret"], p) for p in posts)
        assert {p.path for p in posts} == {"/hook?token=abc"}
        assert [b["type"] for b in receiver.bodies()] == ["job.created", "job.canceled"]
        assert all(b["data"]["id"] == "j1" for b in receiver.bodies())
        assert sorted(receiver.ids()) == sorted(r["id"] for r in rows)
        assert all(r["attempts"] == 1 and r["last_status_code"] == 200 for r in rows)
        # a forged body fails the check
        forged = posts[0].__class__(posts[0].method, posts[0].path, posts[0].headers,
                                    posts[0].body.replace(b"j1", b"j2"))
        with pytest.raises(Exception):  # noqa: B017 - standardwebhooks' own error type
            signature_valid(hook["secret"], forged)
        # the printer filter: a job without a printer is not p1's
        assert await deliveries(api, only_p1["id"]) == []
        shown = (await api.get(f"/api/v1/webhooks/{hook['id']}")).json()
        assert "secret" not in shown and shown["types"] == ["job.canceled", "job.created"]
        assert all("secret" not in h for h in (await api.get("/api/v1/webhooks")).json())


async def test_a_failing_receiver_is_retried_with_the_same_webhook_id(
        farm: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, api = farm
    with webhook_receiver() as receiver:
        receiver.statuses = [500, 500, 503]
        hook = (await api.post("/api/v1/webhooks", json={
            "url": receiver.url, "types": ["job.created"]})).json()
        await spool_and_job(api, "j2")

        async def done() -> dict[str, Any] | None:
            rows = await deliveries(api, hook["id"])
            return rows[0] if rows and rows[0]["status"] == "done" else None

        row = await eventually(done, 15, "the delivery to succeed after three errors")
        assert row["attempts"] == 4
        assert receiver.ids() == [row["id"]] * 4
        assert all(signature_valid(hook["secret"], p) for p in receiver.posts())


@pytest.mark.parametrize("farm", [{"webhook_max_age": 2.0}], indirect=True)
async def test_a_delivery_that_never_succeeds_is_marked_failed(
        farm: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, api = farm
    with webhook_receiver() as receiver:
        receiver.statuses = [500] * 1000
        hook = (await api.post("/api/v1/webhooks", json={
            "url": receiver.url, "types": ["*"]})).json()
        await spool_and_job(api, "j3")

        async def failed() -> dict[str, Any] | None:
            rows = await deliveries(api, hook["id"])
            return rows[0] if rows and rows[0]["status"] == "failed" else None

        row = await eventually(failed, 15, "the delivery to be given up")
        assert row["attempts"] >= 2 and row["last_status_code"] == 500
        assert "500" in row["last_error"] and row["finished_at"] is not None
        listed = (await api.get("/api/v1/deliveries", params={"status": "failed"})).json()
        assert [d["id"] for d in listed] == [row["id"]]
        # deleting the webhook removes its deliveries
        assert (await api.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 200
        assert (await api.get(f"/api/v1/webhooks/{hook['id']}")).status_code == 404
        assert (await api.get("/api/v1/deliveries")).json() == []


async def test_webhook_urls_and_types_are_checked(farm: tuple[FarmNode, httpx.AsyncClient]
                                                 ) -> None:
    _node, api = farm
    for body, field in (
            ({"url": "ftp://example.org/x", "types": ["*"]}, "url"),
            ({"url": "http://user:pw@example.org/x", "types": ["*"]}, "url"),
            ({"url": "http://example.org/x#frag", "types": ["*"]}, "url"),
            ({"url": "http://example.org/x", "types": ["job.exploded"]}, "types"),
            ({"url": "http://example.org/x", "types": []}, "types")):
        response = await api.post("/api/v1/webhooks", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text
    user = await make_user(api, "student")
    response = await api.post("/api/v1/webhooks", headers=user, json={
        "url": "http://example.org/x", "types": ["*"]})
    assert response.status_code == 403


@pytest.mark.parametrize("farm", [{"webhook_networks": "10.0.0.0/8"}], indirect=True)
async def test_webhook_networks_refuse_other_addresses(
        farm: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, api = farm
    response = await api.post("/api/v1/webhooks", json={
        "url": "http://127.0.0.1:9/x", "types": ["*"]})
    assert response.status_code == 422
    assert "WEBHOOK_NETWORKS" in response.json()["error"]["message"]


class Inbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


async def test_the_owner_gets_an_email_when_a_mock_print_is_done(
        tmp_path: Path, smtp: Any) -> None:
    controller, inbox = smtp
    settings = {"smtp_url": f"smtp://127.0.0.1:{controller.port}", "mail_from": "farm@lab.test",
                "notify_interval": 0.05, "mock_printer_job_time": 2}
    async with running_farm(tmp_path, **settings) as (_node, api):
        student = await make_user(api, "student", email="student@uni.test")
        assert (await api.post("/api/v1/filaments", json={
            "id": "s", "type": "PLA", "color": "red",
            "total_weight_in_grams": 1000})).status_code == 201
        assert (await api.post("/api/v1/printers", json={
            "id": "m0", "api": "Mock", "url": "http://mock0:5000", "worker": True,
            "filament_id": "s"})).status_code == 201
        stored = await upload_as(api, "student", name="owl.gcode")
        response = await api.post("/api/v1/print_jobs", headers=student, json={
            "id": "owl", "filament_id": "s", "file_id": stored["id"],
            "print_weight_in_grams": 5})
        assert response.status_code == 201, response.text

        async def mailed() -> bool:
            return bool(inbox.messages)

        await eventually(mailed, 30, "the owner's e-mail")
        rcpt, message = inbox.messages[0]
        assert rcpt == ["student@uni.test"]
        assert message["Subject"] == "Your print owl.gcode is done: ready to collect"
        assert message["From"] == "farm@lab.test" and "student@uni.test" in message["To"]
        assert "owl" in message.get_payload()
        async def recorded() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = (await api.get("/api/v1/deliveries",
                                                        params={"kind": "email"})).json()
            return rows if rows and rows[0]["status"] != "pending" else None

        rows = await eventually(recorded, 10, "the e-mail's result to be committed")
        assert [(r["type"], r["status"]) for r in rows] == [("job.done", "done")]
        assert message["Message-ID"] == f"<{rows[0]['id']}@lab.test>"
        assert len(inbox.messages) == 1


async def test_without_smtp_an_email_delivery_is_skipped(
        farm: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, api = farm
    student = await make_user(api, "student", email="student@uni.test")
    response = await api.post("/api/v1/filaments", json={
        "id": "s", "type": "PLA", "color": "red", "total_weight_in_grams": 1000})
    assert response.status_code == 201
    response = await api.post("/api/v1/print_jobs", headers=student, json={
        "id": "mine", "filament_id": "s", "filepath": "a.gcode", "print_weight_in_grams": 1})
    assert response.status_code == 201
    assert (await api.post("/api/v1/print_jobs/mine/status", headers=student,
                           params={"status": "canceled"})).status_code == 200

    async def skipped() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = (await api.get("/api/v1/deliveries")).json()
        return rows if rows and rows[0]["status"] == "skipped" else None

    rows = await eventually(skipped, 10, "the e-mail delivery to be skipped")
    assert rows[0]["kind"] == "email" and rows[0]["type"] == "job.canceled"
    assert rows[0]["target"] == "student@uni.test"
    assert "SMTP_URL" in rows[0]["last_error"]
    assert rows[0]["payload"]["subject"] == "Your print a.gcode was canceled"


async def test_a_test_notification_is_signed_sent_now_and_not_recorded(
        farm: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _node, api = farm
    with webhook_receiver() as receiver:
        hook = (await api.post("/api/v1/webhooks", json={
            "url": f"{receiver.url}/hook", "types": ["job.done"]})).json()
        tested = await api.post(f"/api/v1/webhooks/{hook['id']}/test")
        assert tested.status_code == 200, tested.text
        answer = tested.json()
        assert (answer["result"], answer["status_code"], answer["error"]) == ("ok", 200, None)
        [post] = receiver.posts()
        assert signature_valid(hook["secret"], post)
        assert receiver.ids() == [answer["id"]]
        [body] = receiver.bodies()
        assert body["type"] == "webhook.test" and body["data"]["webhook_id"] == hook["id"]
        # The receiver fails: the answer says how; nothing is retried or recorded.
        receiver.statuses = [503]
        failed = (await api.post(f"/api/v1/webhooks/{hook['id']}/test")).json()
        assert (failed["result"], failed["status_code"]) == ("error", 503)
        assert "503" in failed["error"]
        assert len(receiver.posts()) == 2
        assert await deliveries(api, hook["id"]) == []
    gone = await api.post("/api/v1/webhooks/nope/test")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "webhook_not_found"
    student = await make_user(api, "student")
    refused = await api.post(f"/api/v1/webhooks/{hook['id']}/test", headers=student)
    assert refused.status_code == 403
