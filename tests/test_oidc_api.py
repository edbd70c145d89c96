"""OpenID Connect through the REST API: a provider's JWT signs a user in (created on first
sight), its role follows the claim, and every bad token is a 401."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from mes.api.app import create_app
from mes.auth.bootstrap import ensure_admin
from mes.config import Settings
from mes.node import FarmNode
from tests.auth import admin_headers, bearer
from tests.farm_helpers import SINGLE_NODE
from tests.ports import free_port
from tests.test_oidc import AUDIENCE, ISSUER, ROLE_CLAIM, In, JwksServer, Keys, token


@pytest.fixture
def provider() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture
async def oidc_api(tmp_path: Path, provider: JwksServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                        upload_path=tmp_path / "upload", raft_self=f"127.0.0.1:{free_port()}",
                        oidc_issuer=ISSUER, oidc_audience=AUDIENCE,
                        oidc_jwks_url=provider.url, oidc_role_claim=ROLE_CLAIM)
    node = FarmNode(settings, tuning=SINGLE_NODE)
    try:
        await ensure_admin(node)
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://mes/api/v1",
                                     headers=admin_headers()) as client:
            yield client
    finally:
        node.close()


async def test_a_valid_jwt_signs_in_a_user_created_on_first_sight(
        oidc_api: httpx.AsyncClient) -> None:
    student = token(sub="auth0|student", name="Stu Dent", email="stu@example.test",
                    **{ROLE_CLAIM: None})
    me = await oidc_api.get("/users/me", headers=bearer(student))
    assert me.status_code == 200, me.text
    user = me.json()
    assert (user["name"], user["email"], user["role"], user["oidc_subject"]) == (
        "Stu Dent", "stu@example.test", "user", "auth0|student")
    # The same subject is the same user; as a user it may submit but not manage printers.
    again = await oidc_api.get("/users/me", headers=bearer(student))
    assert again.json()["id"] == user["id"]
    assert (await oidc_api.post("/printers", json={"id": "p1"},
                                headers=bearer(student))).status_code == 403
    # A role from the configured claim; a later token with another role changes it.
    staff = token(sub="auth0|staff", **{ROLE_CLAIM: ["operator"]})
    assert (await oidc_api.get("/users/me", headers=bearer(staff))).json()["role"] == "operator"
    assert (await oidc_api.post("/printers", json={"id": "p1"},
                                headers=bearer(staff))).status_code == 201
    demoted = token(sub="auth0|staff", **{ROLE_CLAIM: "user"})
    assert (await oidc_api.get("/users/me", headers=bearer(demoted))).json()["role"] == "user"
    users = (await oidc_api.get("/users")).json()
    assert sorted(u["oidc_subject"] or "" for u in users) == ["", "auth0|staff", "auth0|student"]
    # A disabled user's valid JWT is refused.
    assert (await oidc_api.patch(f"/users/{user['id']}", json={"disabled": True})
            ).status_code == 200
    assert (await oidc_api.get("/users/me", headers=bearer(student))).status_code == 401


@pytest.mark.parametrize(("bad", "reason"), [
    (lambda: token(iss="https://evil.example.test/"), "wrong issuer"),
    (lambda: token(aud="https://another.example.test/"), "wrong audience"),
    (lambda: token(exp=In(-3600), iat=In(-7200)), "token expired"),
    (lambda: token(kid="rsa-unknown"), "unknown signing key"),
    (lambda: token(key=Keys.impostor), "bad signature"),
])
async def test_bad_jwts_are_refused_and_create_nobody(
        oidc_api: httpx.AsyncClient, bad: object, reason: str) -> None:
    make = bad
    assert callable(make)
    response = await oidc_api.get("/users/me", headers=bearer(make()))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert reason in response.json()["error"]["message"]
    assert [u["id"] for u in (await oidc_api.get("/users")).json()] == ["admin"]
