"""The web page's session: sign-in by password or token, the cookie, the CSRF rule, sign-out,
and the printer cards the page reads."""

from __future__ import annotations

import time

import httpx

from tests.accounts import make_user
from tests.auth import bearer

PASSWORD = "correct horse battery"


async def _user(api: httpx.AsyncClient, name: str, role: str = "user") -> dict[str, str]:
    response = await api.post("/api/v1/users", json={"name": name, "role": role,
                                                     "password": PASSWORD})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _browser(api: httpx.AsyncClient, base_url: str = "http://mes") -> httpx.AsyncClient:
    """A client like a browser: no Authorization header, a cookie jar."""
    return httpx.AsyncClient(transport=api._transport, base_url=base_url)


async def test_password_sign_in_sets_a_strict_http_only_cookie_that_authenticates(
        api: httpx.AsyncClient) -> None:
    alice = await _user(api, "alice")
    async with _browser(api) as page:
        response = await page.post("/api/v1/session", json={"name": "ALICE",
                                                             "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user"] == {"id": alice["id"], "name": "alice", "role": "user"}
        assert body["method"] == "password"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("mes_session=mes_")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
            assert attribute in cookie
        assert "Secure" not in cookie  # plain http
        me = await page.get("/api/v1/session")
        assert me.status_code == 200 and me.json()["user"]["id"] == alice["id"]
        assert (await page.get("/api/v1/users/me")).json()["name"] == "alice"

    # The session is a replicated API token of the user, named "web session", 12 h long.
    tokens = (await api.get("/api/v1/tokens", params={"user_id": alice["id"]})).json()
    assert [t["name"] for t in tokens] == ["web session"]
    assert tokens[0]["expires_at"] is not None


async def test_the_cookie_is_secure_over_https(api: httpx.AsyncClient) -> None:
    await _user(api, "bob")
    async with _browser(api, "https://mes") as page:
        response = await page.post("/api/v1/session", json={"name": "bob",
                                                             "password": PASSWORD})
        assert response.status_code == 200
        assert "Secure" in response.headers["set-cookie"]


async def test_wrong_password_unknown_user_and_disabled_user_get_401(
        api: httpx.AsyncClient) -> None:
    carol = await _user(api, "carol")
    async with _browser(api) as page:
        for body in ({"name": "carol", "password": "not the password"},
                     {"name": "nobody", "password": PASSWORD},
                     {"token": "mes_" + "x" * 43}):
            response = await page.post("/api/v1/session", json=body)
            assert response.status_code == 401, response.text
            assert set(response.json()["error"]) == {"code", "message", "field"}
            assert "set-cookie" not in response.headers
        assert (await page.post("/api/v1/session", json={"name": "carol"})).status_code == 422
        assert (await page.post("/api/v1/session", json={
            "name": "carol", "password": PASSWORD, "token": "mes_x"})).status_code == 422
        await api.patch(f"/api/v1/users/{carol['id']}", json={"disabled": True})
        response = await page.post("/api/v1/session", json={"name": "carol",
                                                             "password": PASSWORD})
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "wrong user name or password"


async def test_cookie_requests_that_change_state_need_the_csrf_header(
        api: httpx.AsyncClient) -> None:
    await _user(api, "dave")
    async with _browser(api) as page:
        await page.post("/api/v1/session", json={"name": "dave", "password": PASSWORD})
        refused = await page.post("/api/v1/tokens", json={"name": "forged"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_header_missing"
        assert (await page.delete("/api/v1/session")).status_code == 403
        allowed = await page.post("/api/v1/tokens", json={"name": "mine"},
                                  headers={"X-Requested-With": "mes"})
        assert allowed.status_code == 201, allowed.text
        # Reads need no header.
        assert (await page.get("/api/v1/printers")).status_code == 200
    # Bearer requests are unaffected.
    assert (await api.post("/api/v1/tokens", json={"name": "plain"})).status_code == 201


async def test_sign_out_revokes_a_password_session_but_keeps_a_given_token(
        api: httpx.AsyncClient) -> None:
    await _user(api, "erin")
    async with _browser(api) as page:
        await page.post("/api/v1/session", json={"name": "erin", "password": PASSWORD})
        token = page.cookies["mes_session"]
        response = await page.delete("/api/v1/session", headers={"X-Requested-With": "mes"})
        assert response.status_code == 204
        assert 'mes_session=""' in response.headers["set-cookie"]
        assert "mes_session" not in page.cookies
        assert (await page.get("/api/v1/session")).status_code == 401
    assert (await api.get("/api/v1/session", headers=bearer(token))).status_code == 401

    headers = await make_user(api, "frank")
    api_token = headers["Authorization"].split()[1]
    async with _browser(api) as page:
        signed = await page.post("/api/v1/session", json={"token": api_token})
        assert signed.status_code == 200 and signed.json()["method"] == "token"
        assert (await page.get("/api/v1/session")).json()["method"] == "token"
        assert (await page.delete("/api/v1/session",
                                  headers={"X-Requested-With": "mes"})).status_code == 204
    assert (await api.get("/api/v1/session", headers=headers)).json()["method"] == "bearer"


async def test_unknown_user_costs_a_password_hash_too(api: httpx.AsyncClient) -> None:
    await _user(api, "gina")
    async with _browser(api) as page:
        await page.post("/api/v1/session", json={"name": "nobody", "password": "x"})  # warm up
        timings = {}
        for name in ("gina", "nobody"):
            started = time.process_time()
            await page.post("/api/v1/session", json={"name": name, "password": "wrong"})
            timings[name] = time.process_time() - started
    # argon2id takes tens of milliseconds of CPU either way (an unknown user is not cheaper).
    assert timings["nobody"] > 0.3 * timings["gina"], timings


async def test_printer_cards_show_status_job_and_spool_by_role(
        api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/filaments", json={"id": "pla", "type": "PLA", "color": "red",
                                              "total_weight_in_grams": 1000})
    for n in range(5):
        response = await api.post("/api/v1/printers", json={
            "id": f"p{n}", "group": "lab" if n % 2 else "hall", "filament_id": "pla",
            "camera_url": "http://192.0.2.7/cam" if n == 0 else None})
        assert response.status_code == 201, response.text
    page = await api.get("/api/v1/dashboard/printers", params={"limit": 2})
    assert [c["id"] for c in page.json()] == ["p0", "p1"]
    rest = await api.get("/api/v1/dashboard/printers",
                         params={"limit": 10, "cursor": page.headers["X-Next-Cursor"]})
    assert [c["id"] for c in rest.json()] == ["p2", "p3", "p4"]
    first = page.json()[0]
    assert first["camera_url"] == "http://192.0.2.7/cam"
    assert first["spool"]["id"] == "pla" and first["status"] is None and first["job"] is None
    lab = await api.get("/api/v1/dashboard/printers", params={"group": "lab"})
    assert [c["id"] for c in lab.json()] == ["p1", "p3"]
    unknown = await api.get("/api/v1/dashboard/printers", params={"state": "unknown"})
    assert len(unknown.json()) == 5
    assert (await api.get("/api/v1/dashboard/printers",
                          params={"state": "printing"})).json() == []
    some = await api.get("/api/v1/dashboard/printers", params=[("id", "p4"), ("id", "p0")])
    assert [c["id"] for c in some.json()] == ["p0", "p4"]
    too_many = await api.get("/api/v1/dashboard/printers",
                             params=[("id", f"x{n}") for n in range(201)])
    assert too_many.status_code == 422
    assert (await api.get("/api/v1/dashboard/printers",
                          params={"state": "melting"})).status_code == 422


async def test_a_user_sees_another_users_running_job_only_as_not_theirs(
        api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/filaments", json={"id": "pla", "type": "PLA", "color": "red",
                                              "total_weight_in_grams": 1000})
    for printer in ("mine", "theirs"):
        await api.post("/api/v1/printers", json={"id": printer})
    student = await make_user(api, "student")
    jobs = {"mine": student, "theirs": {}}  # the admin client's own token for "theirs"
    for printer, headers in jobs.items():
        job = await api.post("/api/v1/print_jobs", headers=headers, json={
            "id": f"job-{printer}", "printer_id": printer, "filament_id": "pla",
            "filepath": f"{printer}.gcode", "print_weight_in_grams": 5})
        assert job.status_code == 201, job.text
        started = await api.post(f"/api/v1/print_jobs/job-{printer}/status",
                                 params={"status": "running"})
        assert started.status_code == 200, started.text
    as_student = {c["id"]: c["job"] for c in (await api.get(
        "/api/v1/dashboard/printers", headers=student)).json()}
    assert as_student["mine"]["mine"] is True
    assert as_student["mine"]["filepath"] == "mine.gcode"
    assert as_student["mine"]["owner_name"] == "student"
    assert as_student["theirs"] == {"mine": False, "id": None, "filepath": None, "file_id": None,
                                    "phase": None,
                                    "owner_id": None, "owner_name": None,
                                    "print_weight_in_grams": None}
    as_admin = {c["id"]: c["job"] for c in (await api.get(
        "/api/v1/dashboard/printers")).json()}
    assert as_admin["theirs"]["owner_name"] == "admin"
    assert as_admin["mine"]["owner_name"] == "student" and as_admin["mine"]["mine"] is False
