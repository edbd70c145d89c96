"""Accounts, roles, tokens and ownership through the REST API, in-process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mes.auth.secrets import token_hash
from mes.node import FarmNode
from mes.state.ops import Op
from tests.accounts import make_user
from tests.auth import ADMIN_TOKEN, bearer
from tests.farm_helpers import eventually, running_farm, upload_as
from tests.test_api import assert_error

SPOOL = {"id": "f1", "type": "PLA", "color": "black", "total_weight_in_grams": 1000}


def job_body(job_id: str, grams: int = 10) -> dict[str, object]:
    return {"id": job_id, "filament_id": "f1", "filepath": "/g/a.gcode",
            "print_weight_in_grams": grams}


async def test_no_token_bad_token_and_public_routes(api: httpx.AsyncClient) -> None:
    anonymous = {"Authorization": ""}
    response = await api.get("/api/v1/printers", headers=anonymous)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    for token in ("mes_nonsense", "x" * 5000, "Bearer", "a.b.c"):
        response = await api.get("/api/v1/printers", headers=bearer(token))
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    response = await api.get("/api/v1/printers", headers={"Authorization": f"Basic {ADMIN_TOKEN}"})
    assert_error(response, 401, "unauthorized")
    for path in ("/api/v1/health", "/api/v1/health/live", "/api/v1/openapi.json",
                 "/api/v1/docs"):
        assert (await api.get(path, headers=anonymous)).status_code == 200, path
    assert (await api.get("/api/v1/printers")).status_code == 200


async def test_users_see_and_touch_only_their_own_jobs(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/filaments", json=SPOOL)).status_code == 201
    alice = await make_user(api, "alice")
    bob = await make_user(api, "bob")
    oscar = await make_user(api, "oscar", role="operator")
    created = await api.post("/api/v1/print_jobs", json=job_body("ja"), headers=alice)
    assert created.status_code == 201, created.text
    assert created.json()["owner_id"] == "alice"
    assert (await api.post("/api/v1/print_jobs", json=job_body("jb"),
                           headers=bob)).status_code == 201

    mine = (await api.get("/api/v1/print_jobs", headers=alice)).json()
    assert [j["id"] for j in mine] == ["ja"]
    # A user's owner filter cannot widen the list.
    widened = await api.get("/api/v1/print_jobs", params={"owner_id": "bob"}, headers=alice)
    assert [j["id"] for j in widened.json()] == ["ja"]
    for method, path in (("GET", "/api/v1/print_jobs/jb"),
                         ("GET", "/api/v1/print_jobs/jb/history"),
                         ("POST", "/api/v1/print_jobs/jb/status?status=Canceled"),
                         ("POST", "/api/v1/print_jobs/jb/pause"),
                         ("POST", "/api/v1/print_jobs/jb/resume")):
        assert_error(await api.request(method, path, headers=alice), 404, "print_job_not_found")
    assert (await api.get("/api/v1/print_jobs/jb")).json()["status"] == "Queued"
    # Users cancel their own jobs but do not run them; operators see and move all.
    assert_error(await api.post("/api/v1/print_jobs/ja/status?status=Running", headers=alice),
                 403, "forbidden")
    everything = (await api.get("/api/v1/print_jobs", headers=oscar)).json()
    assert sorted(j["id"] for j in everything) == ["ja", "jb"]
    by_bob = await api.get("/api/v1/print_jobs", params={"owner_id": "bob"}, headers=oscar)
    assert [j["id"] for j in by_bob.json()] == ["jb"]
    canceled = await api.post("/api/v1/print_jobs/ja/status?status=Canceled", headers=alice)
    assert canceled.json()["status"] == "Canceled"
    history = (await api.get("/api/v1/print_jobs/ja/history", headers=alice)).json()
    assert [(h["to_status"], h["actor"]) for h in history] == [
        ("Queued", "alice"), ("Canceled", "alice")]
    # Users read printers and spools but change nothing of the farm.
    assert (await api.get("/api/v1/filaments/f1", headers=alice)).status_code == 200
    assert_error(await api.patch("/api/v1/filaments/f1", json={"color": "red"}, headers=alice),
                 403, "forbidden")
    assert_error(await api.post("/api/v1/printers", json={"id": "p9"}, headers=alice),
                 403, "forbidden")
    assert (await api.get("/api/v1/filaments/f1")).json()["color"] == "black"


async def test_the_same_idempotency_key_from_two_users_is_two_requests(
        api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/filaments", json=SPOOL)).status_code == 201
    alice = await make_user(api, "alice")
    bob = await make_user(api, "bob")
    body = {k: v for k, v in job_body("x").items() if k != "id"}
    first = await api.post("/api/v1/print_jobs", json=body,
                           headers={**alice, "Idempotency-Key": "same"})
    second = await api.post("/api/v1/print_jobs", json=body,
                            headers={**bob, "Idempotency-Key": "same"})
    assert first.status_code == second.status_code == 201, second.text
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["owner_id"] == "bob"
    again = await api.post("/api/v1/print_jobs", json=body,
                           headers={**alice, "Idempotency-Key": "same"})
    assert again.json()["id"] == first.json()["id"]
    assert len((await api.get("/api/v1/print_jobs")).json()) == 2


async def test_tokens_are_shown_once_listed_without_secrets_and_revoked(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    alice = await make_user(api, "alice")
    created = await api.post("/api/v1/tokens", json={"name": "laptop"}, headers=alice)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("mes_") and len(token) >= 4 + 43
    laptop = bearer(token)
    assert (await api.get("/api/v1/users/me", headers=laptop)).json()["id"] == "alice"
    listed = await api.get("/api/v1/tokens", headers=alice)
    assert {t["name"] for t in listed.json()} == {"test", "laptop"}
    assert token not in listed.text and token_hash(token) not in listed.text
    assert "token_hash" not in listed.text
    # Another user cannot see or revoke it; the admin sees everyone's.
    bob = await make_user(api, "bob")
    token_id = created.json()["id"]
    assert_error(await api.delete(f"/api/v1/tokens/{token_id}", headers=bob), 404)
    assert_error(await api.get("/api/v1/tokens", params={"user_id": "alice"}, headers=bob), 403)
    assert token_id in {t["id"] for t in (await api.get("/api/v1/tokens")).json()}
    revoked = await api.delete(f"/api/v1/tokens/{token_id}", headers=alice)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = await api.get("/api/v1/users/me", headers=laptop)
    assert_error(response, 401, "unauthorized")
    assert "revoked" in response.json()["error"]["message"]
    # The token's last use was recorded (asynchronously, at most once a minute).
    async def last_used() -> object:
        rows = (await api.get("/api/v1/tokens", params={"user_id": "alice"})).json()
        return next(t for t in rows if t["id"] == token_id)["last_used_at"]
    assert await eventually(last_used, 5, "the token's last use to be recorded")


async def test_expired_token_and_disabled_user_are_refused(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    alice = await make_user(api, "alice")
    token = "mes_short-lived-token-for-the-expiry-test-0000000000"
    outcome = await node.writer.submit(Op.TOKEN_CREATE, {
        "id": "short", "user_id": "alice", "name": "short", "token_hash": token_hash(token),
        "expires_at": time.time() + 0.5})
    assert outcome.ok, outcome.error
    assert (await api.get("/api/v1/users/me", headers=bearer(token))).status_code == 200

    async def refused() -> bool:
        response = await api.get("/api/v1/users/me", headers=bearer(token))
        return response.status_code == 401 and "expired" in response.text
    await eventually(refused, 5, "the token to expire")
    assert (await api.patch("/api/v1/users/alice", json={"disabled": True})).status_code == 200
    assert_error(await api.get("/api/v1/users/me", headers=alice), 401, "unauthorized")
    # A user cannot re-enable themselves or promote themselves.
    assert (await api.patch("/api/v1/users/alice", json={"disabled": False})).status_code == 200
    assert_error(await api.patch("/api/v1/users/alice", json={"role": "admin"}, headers=alice),
                 403, "forbidden")
    renamed = await api.patch("/api/v1/users/alice", json={"name": "Alice A."}, headers=alice)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Alice A."


async def test_the_last_admin_stays_and_passwords_stay_hidden(api: httpx.AsyncClient) -> None:
    assert_error(await api.patch("/api/v1/users/admin", json={"role": "user"}), 409,
                 "last_admin")
    assert_error(await api.patch("/api/v1/users/admin", json={"disabled": True}), 409,
                 "last_admin")
    created = await api.post("/api/v1/users", json={"id": "carol", "name": "carol",
                                                   "password": "correct horse battery"})
    assert created.status_code == 201, created.text
    assert created.json()["has_password"] is True
    every = await api.get("/api/v1/users")
    assert "argon2" not in every.text and "correct horse" not in every.text
    assert_error(await api.post("/api/v1/users", json={"name": "x", "role": "root"}), 422)
    assert_error(await api.post("/api/v1/users", json={"name": "carol"}), 409, "name_taken")


async def test_orders_are_all_or_nothing_and_follow_their_jobs(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/filaments", json=SPOOL)).status_code == 201
    alice = await make_user(api, "alice")
    bad = {"id": "o-bad", "jobs": [job_body("o1"), {**job_body("o2"), "filament_id": "nope"}]}
    response = await api.post("/api/v1/orders", json=bad, headers=alice)
    assert_error(response, 404, "filament_not_found", "jobs.1.filament_id")
    assert (await api.get("/api/v1/print_jobs")).json() == []
    assert_error(await api.get("/api/v1/orders/o-bad"), 404)
    good = {"id": "o-good", "name": "brackets", "jobs": [job_body("o1"), job_body("o2")]}
    created = await api.post("/api/v1/orders", json=good, headers=alice)
    assert created.status_code == 201, created.text
    order = created.json()
    assert (order["owner_id"], order["status"], order["job_counts"]) == (
        "alice", "Queued", {"Queued": 2})
    jobs = (await api.get("/api/v1/print_jobs", params={"order_id": "o-good"})).json()
    assert [(j["id"], j["owner_id"], j["order_id"]) for j in jobs] == [
        ("o1", "alice", "o-good"), ("o2", "alice", "o-good")]
    for job_id in ("o1", "o2"):
        assert (await api.post(f"/api/v1/print_jobs/{job_id}/status?status=Canceled",
                               headers=alice)).status_code == 200
    assert (await api.get("/api/v1/orders/o-good", headers=alice)).json()["status"] == "Canceled"
    bob = await make_user(api, "bob")
    assert_error(await api.get("/api/v1/orders/o-good", headers=bob), 404)
    assert (await api.get("/api/v1/orders", headers=bob)).json() == []


async def test_audit_shows_who_did_what_to_admins_only(api: httpx.AsyncClient) -> None:
    alice = await make_user(api, "alice")
    assert (await api.post("/api/v1/filaments", json=SPOOL)).status_code == 201
    assert (await api.post("/api/v1/print_jobs", json=job_body("j1"),
                           headers=alice)).status_code == 201
    entries = (await api.get("/api/v1/audit")).json()
    assert ("admin", Op.FILAMENT_CREATE, "f1") in {(e["actor"], e["op"], e["target"])
                                                   for e in entries}
    assert ("alice", Op.JOB_CREATE, "j1") in {(e["actor"], e["op"], e["target"]) for e in entries}
    only_alice = (await api.get("/api/v1/audit", params={"actor": "alice"})).json()
    assert {e["actor"] for e in only_alice} == {"alice"}
    assert_error(await api.get("/api/v1/audit", headers=alice), 403, "forbidden")


@pytest.fixture
async def approval_farm(tmp_path: Path) -> AsyncIterator[tuple[FarmNode, httpx.AsyncClient]]:
    async with running_farm(tmp_path, require_approval=True) as pair:
        yield pair


async def test_approval_gates_the_scheduler(
        approval_farm: tuple[FarmNode, httpx.AsyncClient]) -> None:
    _, api = approval_farm
    assert (await api.post("/api/v1/filaments", json={**SPOOL, "total_weight_in_grams": 5000})
            ).status_code == 201
    printer = {"id": "m0", "api": "Mock", "url": "http://mock-printer0:5000", "worker": True,
               "filament_id": "f1"}
    assert (await api.post("/api/v1/printers", json=printer)).status_code == 201
    alice = await make_user(api, "alice")
    stored = await upload_as(api, "alice")  # a user prints only files they uploaded
    body = {"filament_id": "f1", "file_id": stored["id"], "print_weight_in_grams": 5}
    waiting = await api.post("/api/v1/print_jobs", json={**body, "id": "student"}, headers=alice)
    assert waiting.status_code == 201, waiting.text
    assert waiting.json()["approval"] == "pending"
    assert waiting.json()["hold"]["code"] == "awaiting_approval"
    # A staff job submitted later is not held and prints first: the scheduler skipped the
    # student's job although it is older.
    staff = await api.post("/api/v1/print_jobs", json={**body, "id": "staff"})
    assert staff.json()["approval"] is None

    async def staff_done() -> bool:
        return (await api.get("/api/v1/print_jobs/staff")).json()["status"] == "Done"
    await eventually(staff_done, 30, "the staff job to print")
    held = (await api.get("/api/v1/print_jobs/student", headers=alice)).json()
    assert (held["status"], held["phase"], held["approval"]) == ("Queued", None, "pending")
    # Users cannot approve; operators can, and then it prints.
    assert_error(await api.post("/api/v1/print_jobs/student/approve", headers=alice), 403)
    oscar = await make_user(api, "oscar", role="operator")
    approved = await api.post("/api/v1/print_jobs/student/approve", headers=oscar)
    assert approved.status_code == 200 and approved.json()["approval"] == "approved"

    async def student_done() -> bool:
        return (await api.get("/api/v1/print_jobs/student")).json()["status"] == "Done"
    await eventually(student_done, 30, "the approved job to print")
    history = (await api.get("/api/v1/print_jobs/student/history")).json()
    assert ("approved", "oscar") in {(h["cause"], h["actor"]) for h in history}
    # A rejected job is canceled with the reason; it cannot be approved afterwards.
    other = await api.post("/api/v1/print_jobs", json={**body, "id": "bad"}, headers=alice)
    assert other.json()["approval"] == "pending"
    assert_error(await api.post("/api/v1/print_jobs/bad/reject", json={"reason": ""},
                                headers=oscar), 422)
    rejected = await api.post("/api/v1/print_jobs/bad/reject",
                              json={"reason": "too big for the lab"}, headers=oscar)
    assert (rejected.json()["status"], rejected.json()["approval"]) == ("Canceled", "rejected")
    assert_error(await api.post("/api/v1/print_jobs/bad/approve", headers=oscar), 409,
                 "not_awaiting_approval")
    causes = [h["cause"] for h in (await api.get("/api/v1/print_jobs/bad/history")).json()]
    assert causes[-1] == "rejected: too big for the lab"
